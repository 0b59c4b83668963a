// The forward pass of a separable-conv half, fused, for XLA:CPU through the
// XLA FFI:
//
//   z = relu(x * a + b)            (per-channel affine: the previous batch norm;
//                                   affine = 0 reads relu(x))
//   d = depthwise(z, dw)           ([k, k, C], 'same' padding, stride, dilation;
//                                   absent in the 1x1 variant)
//   y = d @ pw                     ([C, Cout])
//   mean[o], var[o]                of y over N, H, W (var = E[y^2] - mean^2, >= 0)
//
// Unfused, XLA:CPU writes and reads z, d and y, and reads y once more for the
// batch-norm statistics: at the supernet's evaluation batch (500 x 32 x 32 x 16,
// 33 MB per tensor, more than the L3 cache) every pass goes to DRAM. Here each
// output row is made from k input rows transformed (once each, kept in a small
// ring of zero-bordered rows in L1), the depthwise row and the 1x1 product stay
// in cache, and y is
// written once while its moments are summed (in double, per fixed chunk of rows,
// chunks added in order: the same bits whatever the thread count).
//
// Forward only: nas_jax/kernels/fused.py gives it a JVP rule made of the
// unfused primitives, so derivatives run those, and every undifferentiated
// forward (evaluation, the supernet cell scan's custom-VJP forward) runs this.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nas_jax_kernels_common.h"
#include "nas_jax_kernels_depthwise_row.h"
#include "nas_jax_kernels_matmul.h"

namespace {

using nas_jax::DispatchWidth;
using nas_jax::ParallelFor;

constexpr int64_t kMaxChunks = 64;

struct Geometry {
  int64_t n, h, w, c, cout, k, ho, wo, stride, dilation, pad, wp;  // k = 0: no depthwise
  bool affine;
};

// out[col, :] = relu(x[col, :] * a + b) (or relu(x)) for the w columns of a row.
template <int kC>
void TransformRow(const Geometry& g, const float* __restrict x, const float* __restrict a,
                  const float* __restrict b, float* __restrict out) {
  const int64_t C = kC > 0 ? kC : g.c;
#ifdef NAS_JAX_AVX2
  if (C % 8 == 0) {  // any multiple of 8 (the 1x1 variant reads 80-320 channels)
    const __m256 zero = _mm256_setzero_ps();
    if (g.affine) {
      for (int64_t col = 0; col < g.w; ++col)
        for (int64_t c = 0; c < C; c += 8) {
          const __m256 z = _mm256_fmadd_ps(_mm256_loadu_ps(x + col * C + c), _mm256_loadu_ps(a + c),
                                           _mm256_loadu_ps(b + c));
          _mm256_storeu_ps(out + col * C + c, _mm256_max_ps(z, zero));
        }
    } else {
      for (int64_t e = 0; e < g.w * C; e += 8)
        _mm256_storeu_ps(out + e, _mm256_max_ps(_mm256_loadu_ps(x + e), zero));
    }
    return;
  }
#endif
  for (int64_t col = 0; col < g.w; ++col) {
    for (int64_t c = 0; c < C; ++c) {
      const float v = g.affine ? x[col * C + c] * a[c] + b[c] : x[col * C + c];
      out[col * C + c] = v < 0.0f ? 0.0f : v;
    }
  }
}

// d[wo, :] = sum_{i, j} dw[i, j, :] * rows[i][wo * s + j * d, :] over the k
// transformed, zero-bordered input rows (wp columns each).
template <int kC>
void DepthwiseRow(const Geometry& g, const float* const* rows, const float* __restrict dw, float* __restrict d) {
  const int64_t C = kC > 0 ? kC : g.c;
#ifdef NAS_JAX_AVX2
  if constexpr (kC > 0 && kC % 8 == 0) {
    constexpr int kV = kC / 8;
    if (nas_jax::DepthwiseRowAvxHandles<kC>(g.k)) {
      nas_jax::DepthwiseRowAvx<kC>(rows, dw, d, g.k, g.wo, g.stride, g.dilation);
      return;
    }
    for (int64_t wo = 0; wo < g.wo; ++wo) {
      __m256 acc[kV];
      for (int v = 0; v < kV; ++v) acc[v] = _mm256_setzero_ps();
      for (int64_t i = 0; i < g.k; ++i) {
        const float* row = rows[i] + wo * g.stride * kC;
        const float* wt = dw + i * g.k * kC;
        for (int64_t j = 0; j < g.k; ++j)
          for (int v = 0; v < kV; ++v)
            acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + j * kC + 8 * v),
                                     _mm256_loadu_ps(row + j * g.dilation * kC + 8 * v), acc[v]);
      }
      for (int v = 0; v < kV; ++v) _mm256_storeu_ps(d + wo * kC + 8 * v, acc[v]);
    }
    return;
  }
#endif
  std::vector<float> a(C);
  for (int64_t wo = 0; wo < g.wo; ++wo) {
    std::fill(a.begin(), a.end(), 0.0f);
    for (int64_t i = 0; i < g.k; ++i) {
      const float* row = rows[i];
      for (int64_t j = 0; j < g.k; ++j) {
        const float* xp = row + (wo * g.stride + j * g.dilation) * C;
        const float* wt = dw + (i * g.k + j) * C;
        for (int64_t c = 0; c < C; ++c) a[c] += wt[c] * xp[c];
      }
    }
    std::memcpy(d + wo * C, a.data(), sizeof(float) * C);
  }
}

// sum[o] += sum over the row's wo columns of y, sumsq[o] the same of y^2
// (float within the row, double across rows).
template <int kN>
void RowMoments(const Geometry& g, const float* __restrict y, double* __restrict sum, double* __restrict sumsq) {
  const int64_t N = kN > 0 ? kN : g.cout;
#ifdef NAS_JAX_AVX2
  if constexpr (kN > 0 && kN % 8 == 0) {
    constexpr int kV = kN / 8;
    __m256 s[kV], q[kV];
    for (int v = 0; v < kV; ++v) s[v] = q[v] = _mm256_setzero_ps();
    for (int64_t wo = 0; wo < g.wo; ++wo)
      for (int v = 0; v < kV; ++v) {
        const __m256 yv = _mm256_loadu_ps(y + wo * kN + 8 * v);
        s[v] = _mm256_add_ps(s[v], yv);
        q[v] = _mm256_fmadd_ps(yv, yv, q[v]);
      }
    alignas(32) float sf[kN], qf[kN];
    for (int v = 0; v < kV; ++v) {
      _mm256_store_ps(sf + 8 * v, s[v]);
      _mm256_store_ps(qf + 8 * v, q[v]);
    }
    for (int64_t o = 0; o < kN; ++o) {
      sum[o] += sf[o];
      sumsq[o] += qf[o];
    }
    return;
  }
#endif
  std::vector<float> s(N, 0.0f), q(N, 0.0f);
  for (int64_t wo = 0; wo < g.wo; ++wo)
    for (int64_t o = 0; o < N; ++o) {
      s[o] += y[wo * N + o];
      q[o] += y[wo * N + o] * y[wo * N + o];
    }
  for (int64_t o = 0; o < N; ++o) {
    sum[o] += s[o];
    sumsq[o] += q[o];
  }
}

struct RowFns {
  void (*transform)(const Geometry&, const float*, const float*, const float*, float*);
  void (*depthwise)(const Geometry&, const float* const*, const float*, float*);
  void (*moments)(const Geometry&, const float*, double*, double*);
  void (*matmul)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
};

RowFns PickRowFns(const Geometry& g) {
  RowFns f;
  DispatchWidth(g.c, [&]<int kC>() {
    f.transform = &TransformRow<kC>;
    f.depthwise = &DepthwiseRow<kC>;
  });
  DispatchWidth(g.cout, [&]<int kN>() {
    f.moments = &RowMoments<kN>;
    f.matmul = &nas_jax::MatmulRows<kN>;
  });
  return f;
}

// Output rows [r0, r1) (row r = sample r / ho, output row r % ho). Each input
// row is transformed once per sample, into a nas_jax::RowRing.
void Rows(const Geometry& g, const RowFns& f, const float* x, const float* a, const float* b, const float* dw,
          const float* pw, float* y, int64_t r0, int64_t r1, double* sum, double* sumsq) {
  const int64_t C = g.c;
  if (g.k == 0) {
    std::vector<float> row(g.w * C);
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * g.wo * g.cout;
      f.transform(g, x + r * g.w * C, a, b, row.data());  // 1x1: output row r reads input row r
      f.matmul(row.data(), pw, yr, 0, g.wo, C, g.cout);
      f.moments(g, yr, sum, sumsq);
    }
    return;
  }
  nas_jax::RowRing ring(g.k, g.stride, g.dilation, g.pad, g.wp, C);
  std::vector<float> d(g.wo * C);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.ho;
    float* yr = y + r * g.wo * g.cout;
    const float* sample = x + n * g.h * g.w * C;
    const float* const* taps =
        ring.Taps(n, r % g.ho, g.h, [&](int64_t hi, float* dst) { f.transform(g, sample + hi * g.w * C, a, b, dst); });
    f.depthwise(g, taps, dw, d.data());
    f.matmul(d.data(), pw, yr, 0, g.wo, C, g.cout);
    f.moments(g, yr, sum, sumsq);
  }
}

// mean[o], var[o] from the per-chunk double sums (chunks added in order).
void WriteMoments(const std::vector<double>& sums, const std::vector<double>& sumsqs, int64_t chunks, int64_t cout,
                  double count, float* ms, float* vs) {
  for (int64_t o = 0; o < cout; ++o) {
    double s = 0.0, q = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      s += sums[ch * cout + o];
      q += sumsqs[ch * cout + o];
    }
    const double m = count > 0 ? s / count : 0.0;
    ms[o] = static_cast<float>(m);
    vs[o] = static_cast<float>(count > 0 ? std::max(q / count - m * m, 0.0) : 0.0);
  }
}

// x: [N, H, W, C] at xs (xd its dimensions).
ffi::Error Run(ffi::ThreadPool& pool, const float* xs, ffi::Span<const int64_t> xd, const ffi::Buffer<ffi::F32>& a,
               const ffi::Buffer<ffi::F32>& b, const float* dw, int64_t k, const ffi::Buffer<ffi::F32>& pw,
               ffi::ResultBuffer<ffi::F32>& y, ffi::ResultBuffer<ffi::F32>& mean, ffi::ResultBuffer<ffi::F32>& var,
               int64_t stride, int64_t dilation, int64_t affine) {
  auto yd = y->dimensions();
  auto pd = pw.dimensions();
  if (xd.size() != 4 || yd.size() != 4 || pd.size() != 2 || pd[0] != xd[3] || yd[3] != pd[1])
    return ffi::Error::InvalidArgument("fused: need x [N, H, W, C], pw [C, Cout] and y [N, Ho, Wo, Cout]");
  if (a.element_count() != xd[3] || b.element_count() != xd[3])
    return ffi::Error::InvalidArgument("fused: a and b need C elements");
  Geometry g;
  g.n = xd[0]; g.h = xd[1]; g.w = xd[2]; g.c = xd[3]; g.cout = pd[1];
  g.k = k; g.ho = yd[1]; g.wo = yd[2]; g.stride = stride; g.dilation = dilation;
  g.pad = k > 0 ? dilation * (k - 1) / 2 : 0;
  g.wp = g.w + 2 * g.pad;
  g.affine = affine != 0;
  if (k > 0) {
    if (k % 2 == 0 || stride < 1 || dilation < 1)
      return ffi::Error::InvalidArgument("fused: need an odd kernel, stride >= 1, dilation >= 1");
    if (g.ho != (g.h + 2 * g.pad - dilation * (k - 1) - 1) / stride + 1 ||
        g.wo != (g.w + 2 * g.pad - dilation * (k - 1) - 1) / stride + 1)
      return ffi::Error::InvalidArgument("fused: output shape mismatch");
  } else if (g.ho != g.h || g.wo != g.w) {
    return ffi::Error::InvalidArgument("fused: the 1x1 variant keeps H and W");
  }
  const int64_t total = g.n * g.ho;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, total));
  std::vector<double> sums(chunks * g.cout, 0.0), sumsqs(chunks * g.cout, 0.0);
  const RowFns f = PickRowFns(g);
  const float* as = a.typed_data();
  const float* bs = b.typed_data();
  const float* ps = pw.typed_data();
  float* ys = y->typed_data();
  ParallelFor(pool, chunks, [&](int64_t ch) {
    Rows(g, f, xs, as, bs, dw, ps, ys, ch * total / chunks, (ch + 1) * total / chunks, sums.data() + ch * g.cout,
         sumsqs.data() + ch * g.cout);
  });
  WriteMoments(sums, sumsqs, chunks, g.cout, static_cast<double>(total * g.wo), mean->typed_data(),
               var->typed_data());
  return ffi::Error::Success();
}

// relu(x * a + b) -> depthwise(dw) -> @ pw, with moments.
ffi::Error DepthwisePointwise(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                              ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> dw, ffi::Buffer<ffi::F32> pw,
                              ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                              ffi::ResultBuffer<ffi::F32> var, int64_t stride, int64_t dilation, int64_t affine) {
  auto wd = dw.dimensions();
  if (wd.size() != 3 || wd[0] != wd[1] || wd[2] != x.dimensions()[3])
    return ffi::Error::InvalidArgument("fused: dw must be [k, k, C]");
  return Run(pool, x.typed_data(), x.dimensions(), a, b, dw.typed_data(), wd[0], pw, y, mean, var, stride,
             dilation, affine);
}

// relu(x * a + b) -> @ pw, with moments.
ffi::Error Pointwise(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                     ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> pw, ffi::ResultBuffer<ffi::F32> y,
                     ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var, int64_t affine) {
  return Run(pool, x.typed_data(), x.dimensions(), a, b, nullptr, 0, pw, y, mean, var, 1, 1, affine);
}

// The same as DepthwisePointwise on x = candidates[idx]: an edge of the
// supernet reads its input from the cell's states without a copy.
ffi::Error DepthwisePointwisePick(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::F32> a,
                                  ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> dw, ffi::Buffer<ffi::F32> pw,
                                  ffi::RemainingArgs candidates, ffi::ResultBuffer<ffi::F32> y,
                                  ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var, int64_t stride,
                                  int64_t dilation, int64_t affine) {
  if (idx.element_count() != 1) return ffi::Error::InvalidArgument("fused pick: idx must be a scalar");
  auto x = nas_jax::PickArg(idx.typed_data()[0], candidates);
  if (x.has_error()) return x.error();
  auto wd = dw.dimensions();
  if (wd.size() != 3 || wd[0] != wd[1] || x->dimensions().size() != 4 || wd[2] != x->dimensions()[3])
    return ffi::Error::InvalidArgument("fused pick: dw must be [k, k, C]");
  return Run(pool, x->typed_data(), x->dimensions(), a, b, dw.typed_data(), wd[0], pw, y, mean, var, stride,
             dilation, affine);
}

// packed[col * ld, :C] = relu(src[col * stride + offset, :C]) for the wo columns
// of an output row (zero where col * stride + offset >= w).
template <int kC>
void ReluPack(const float* __restrict src, int64_t c_rt, int64_t wo, int64_t w, int64_t stride, int64_t offset,
              float* __restrict packed, int64_t ld) {
  const int64_t C = kC > 0 ? kC : c_rt;
  for (int64_t col = 0; col < wo; ++col) {
    const int64_t wi = col * stride + offset;
    float* out = packed + col * ld;
    if (wi >= w) {
      std::memset(out, 0, sizeof(float) * C);
      continue;
    }
    const float* in = src + wi * C;
#ifdef NAS_JAX_AVX2
    if (C % 8 == 0) {
      const __m256 zero = _mm256_setzero_ps();
      for (int64_t c = 0; c < C; c += 8) _mm256_storeu_ps(out + c, _mm256_max_ps(_mm256_loadu_ps(in + c), zero));
      continue;
    }
#endif
    for (int64_t c = 0; c < C; ++c) out[c] = in[c] < 0.0f ? 0.0f : in[c];
  }
}

// y = sum over slots s with mask[s] != 0 of relu(slot_s) @ (mask[s] * pw[s*C:(s+1)*C]), with moments:
// a 1x1 conv of relu(concat_s(mask[s] * slot_s)) (mask >= 0) that never builds the concatenation and
// skips the zero slots (the supernet cell output's unused nodes). With stride / offset, it reads pixel
// (stride * i + offset, stride * j + offset), zero past the border: one half of a factorized reduce.
ffi::Error PointwiseSlots(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> pw,
                          ffi::RemainingArgs slots, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                          ffi::ResultBuffer<ffi::F32> var, int64_t stride, int64_t offset) {
  const int64_t n_slots = static_cast<int64_t>(slots.size());
  auto yd = y->dimensions();
  auto pd = pw.dimensions();
  if (n_slots < 1 || mask.element_count() != n_slots || yd.size() != 4 || pd.size() != 2 || pd[1] != yd[3])
    return ffi::Error::InvalidArgument("fused slots: need mask [S], pw [S*C, Cout], S slots, y [N, Ho, Wo, Cout]");
  if (stride < 1 || offset < 0 || offset >= stride)
    return ffi::Error::InvalidArgument("fused slots: need stride >= 1 and 0 <= offset < stride");
  std::vector<const float*> active;
  std::vector<int64_t> active_ids;
  int64_t c = 0, h = 0, w = 0;
  for (int64_t s = 0; s < n_slots; ++s) {
    auto buf = slots.get<ffi::Buffer<ffi::F32>>(s);
    if (buf.has_error()) return buf.error();
    auto d = buf->dimensions();
    if (d.size() != 4 || d[0] != yd[0] || (s > 0 && (d[1] != h || d[2] != w || d[3] != c)))
      return ffi::Error::InvalidArgument("fused slots: every slot must be [N, H, W, C], N as in y");
    h = d[1]; w = d[2]; c = d[3];
    if (mask.typed_data()[s] != 0.0f) {
      active.push_back(buf->typed_data());
      active_ids.push_back(s);
    }
  }
  if (pd[0] != n_slots * c) return ffi::Error::InvalidArgument("fused slots: pw must have S * C rows");
  if (yd[1] != (h - 1) / stride + 1 || yd[2] != (w - 1) / stride + 1)
    return ffi::Error::InvalidArgument("fused slots: y must be [N, ceil(H / stride), ceil(W / stride), Cout]");
  Geometry g;  // of the output rows (the transform and the moments read g.w = g.wo columns)
  g.n = yd[0]; g.h = g.ho = yd[1]; g.w = g.wo = yd[2]; g.c = c; g.cout = pd[1];
  g.k = 0; g.stride = g.dilation = 1; g.pad = 0; g.wp = g.w; g.affine = false;
  const int64_t na = static_cast<int64_t>(active.size());
  const int64_t kk = na * c;  // the active rows of pw, scaled by their mask
  std::vector<float> wa(std::max<int64_t>(kk, 1) * g.cout);
  for (int64_t j = 0; j < na; ++j) {
    const float m = mask.typed_data()[active_ids[j]];
    const float* src = pw.typed_data() + active_ids[j] * c * g.cout;
    for (int64_t e = 0; e < c * g.cout; ++e) wa[j * c * g.cout + e] = m * src[e];
  }
  RowFns f;
  void (*pack)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t) = nullptr;
  nas_jax::DispatchWidth(c, [&]<int kC>() { pack = &ReluPack<kC>; });
  nas_jax::DispatchWidth(g.cout, [&]<int kN>() {
    f.moments = &RowMoments<kN>;
    f.matmul = &nas_jax::MatmulRows<kN>;
  });
  const int64_t total = g.n * g.ho;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, total));
  std::vector<double> sums(chunks * g.cout, 0.0), sumsqs(chunks * g.cout, 0.0);
  float* ys = y->typed_data();
  ParallelFor(pool, chunks, [&](int64_t ch) {
    std::vector<float> packed(std::max<int64_t>(g.w * kk, 1));
    double* sum = sums.data() + ch * g.cout;
    double* sumsq = sumsqs.data() + ch * g.cout;
    for (int64_t r = ch * total / chunks; r < (ch + 1) * total / chunks; ++r) {
      float* yr = ys + r * g.w * g.cout;
      const int64_t n = r / g.ho, hi = (r % g.ho) * stride + offset;
      if (na == 0 || hi >= h) {  // relu(0) @ w = 0
        std::memset(yr, 0, sizeof(float) * g.w * g.cout);
      } else {
        for (int64_t j = 0; j < na; ++j)  // packed[col, j*C:(j+1)*C] = relu(slot_j[n, hi, col', :])
          pack(active[j] + (n * h + hi) * w * c, c, g.w, w, stride, offset, packed.data() + j * c, kk);
        f.matmul(packed.data(), wa.data(), yr, 0, g.w, kk, g.cout);
      }
      f.moments(g, yr, sum, sumsq);
    }
  });
  WriteMoments(sums, sumsqs, chunks, g.cout, static_cast<double>(total * g.w), mean->typed_data(),
               var->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedDepthwisePointwise, DepthwisePointwise,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("affine"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedPointwise, Pointwise,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("affine"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedDepthwisePointwisePick, DepthwisePointwisePick,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("affine"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedPointwiseSlots, PointwiseSlots,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("offset"));
