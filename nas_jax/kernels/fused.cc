// A separable-conv half, fused, for XLA:CPU through the XLA FFI:
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
// in cache, and y is written once while its moments are summed (in double, per fixed chunk of rows,
// chunks added in order: the same bits whatever the thread count).
//
// The backward of the same half (DepthwisePointwiseBackward, PointwiseBackward,
// below) recomputes z, d and y row by row and writes only the input gradient.
// nas_jax/kernels/fused.py binds it as the transpose of the JVP, so reverse
// mode runs it; forward mode and higher derivatives run the unfused
// references. Every undifferentiated forward (evaluation, the supernet cell
// scan's custom-VJP forward) runs the forward kernel.
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

// The checked geometry of x [N, H, W, C] -> y [N, Ho, Wo, Cout] through an
// optional k x k depthwise kernel (k = 0: none) and pw [C, Cout], with the
// input affine map (a, b: C elements).
ffi::ErrorOr<Geometry> MakeGeometry(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> yd,
                                    ffi::Span<const int64_t> pd, const ffi::Buffer<ffi::F32>& a,
                                    const ffi::Buffer<ffi::F32>& b, int64_t k, int64_t stride, int64_t dilation,
                                    int64_t affine) {
  using E = ffi::Error;
  if (xd.size() != 4 || yd.size() != 4 || pd.size() != 2 || pd[0] != xd[3] || yd[3] != pd[1] || yd[0] != xd[0])
    return ffi::Unexpected(E::InvalidArgument("fused: need x [N, H, W, C], pw [C, Cout] and y [N, Ho, Wo, Cout]"));
  if (static_cast<int64_t>(a.element_count()) != xd[3] || static_cast<int64_t>(b.element_count()) != xd[3])
    return ffi::Unexpected(E::InvalidArgument("fused: a and b need C elements"));
  Geometry g;
  g.n = xd[0]; g.h = xd[1]; g.w = xd[2]; g.c = xd[3]; g.cout = pd[1];
  g.k = k; g.ho = yd[1]; g.wo = yd[2]; g.stride = stride; g.dilation = dilation;
  g.pad = k > 0 ? dilation * (k - 1) / 2 : 0;
  g.wp = g.w + 2 * g.pad;
  g.affine = affine != 0;
  if (k > 0) {
    if (k % 2 == 0 || stride < 1 || dilation < 1)
      return ffi::Unexpected(E::InvalidArgument("fused: need an odd kernel, stride >= 1, dilation >= 1"));
    if (g.ho != (g.h + 2 * g.pad - dilation * (k - 1) - 1) / stride + 1 ||
        g.wo != (g.w + 2 * g.pad - dilation * (k - 1) - 1) / stride + 1)
      return ffi::Unexpected(E::InvalidArgument("fused: output shape mismatch"));
  } else if (g.ho != g.h || g.wo != g.w) {
    return ffi::Unexpected(E::InvalidArgument("fused: the 1x1 variant keeps H and W"));
  }
  return g;
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
  auto geometry = MakeGeometry(xd, y->dimensions(), pw.dimensions(), a, b, k, stride, dilation, affine);
  if (geometry.has_error()) return geometry.error();
  const Geometry& g = *geometry;
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


// ---- backward ------------------------------------------------------------------------------
// The vector-Jacobian product of a separable-conv half with its moments, given
// its output y and the cotangent of y as gt = gy + c0 + c1 * y per output
// channel (the moments' cotangents folded in by the caller:
// c0 = g_mean / M - c1 * mean, c1 = 2 g_var / M):
//
//   gpw = d^T gt,  gd = gt pw^T,  gdw[i, j] = sum z(tap i, j) * gd,
//   gz = depthwise^T(gd),  gx = gz * [pre > 0] * a  (pre = x * a + b; relu(x): gz * [x > 0]),
//   ga = sum gz * [pre > 0] * x,  gb = sum gz * [pre > 0]
//
// recomputing z and d row by row as the forward does, so x, y and gy are read
// once and gx written once (unfused, z, d, y, gt, gd and gz each take passes
// over memory, and a pass over the 80-channel input of a 1x1 preprocessing is
// 21 MB at batch 64). Per sample, the depthwise transpose scatters each row of
// gd into a zero-bordered gz buffer that stays in cache. Weight and affine
// gradients are summed per fixed chunk of samples (rows for 1x1), chunks in
// order: the same bits whatever the thread count.

// gt[wo, o] = gy[wo, o] + c0[o] + c1[o] * y[wo, o]
template <int kN>
void TotalGradRow(int64_t wo, int64_t n_rt, const float* __restrict gy, const float* __restrict c0,
                  const float* __restrict c1, const float* __restrict y, float* __restrict gt) {
  const int64_t N = kN > 0 ? kN : n_rt;
  for (int64_t col = 0; col < wo; ++col)
    for (int64_t o = 0; o < N; ++o) gt[col * N + o] = gy[col * N + o] + c0[o] + c1[o] * y[col * N + o];
}

#ifdef NAS_JAX_AVX2
// DepthwiseWeightGradRow for 8 channels at offset c and kK taps per kernel
// row: each kernel row's kK sums stay in registers along the output row.
template <int kC, int kK>
void DepthwiseWeightGradRowAvx(const Geometry& g, const float* const* rows, const float* __restrict gd,
                               float* __restrict gdw, int64_t c) {
  const int64_t step = g.stride * kC, dil = g.dilation * kC;
  for (int64_t i = 0; i < kK; ++i) {
    __m256 acc[kK];
    for (int j = 0; j < kK; ++j) acc[j] = _mm256_setzero_ps();
    const float* row = rows[i] + c;
    for (int64_t wo = 0, o = 0; wo < g.wo; ++wo, o += step) {
      const __m256 gv = _mm256_loadu_ps(gd + wo * kC + c);
      for (int j = 0; j < kK; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(row + o + j * dil), gv, acc[j]);
    }
    for (int j = 0; j < kK; ++j) {
      float* out = gdw + (i * kK + j) * kC + c;
      _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), acc[j]));
    }
  }
}
#endif

// gdw[i, j, :] += sum_wo rows[i][wo * s + j * d, :] * gd[wo, :] (rows zero-bordered).
template <int kC>
void DepthwiseWeightGradRow(const Geometry& g, const float* const* rows, const float* __restrict gd,
                            float* __restrict gdw) {
  const int64_t C = kC > 0 ? kC : g.c;
#ifdef NAS_JAX_AVX2
  if constexpr (kC > 0 && kC % 8 == 0) {
    if (g.k == 3 || g.k == 5 || g.k == 7) {
      for (int64_t c = 0; c < kC; c += 8) {
        if (g.k == 3) DepthwiseWeightGradRowAvx<kC, 3>(g, rows, gd, gdw, c);
        if (g.k == 5) DepthwiseWeightGradRowAvx<kC, 5>(g, rows, gd, gdw, c);
        if (g.k == 7) DepthwiseWeightGradRowAvx<kC, 7>(g, rows, gd, gdw, c);
      }
      return;
    }
  }
#endif
  for (int64_t i = 0; i < g.k; ++i)
    for (int64_t j = 0; j < g.k; ++j) {
      float* out = gdw + (i * g.k + j) * C;
      for (int64_t wo = 0; wo < g.wo; ++wo) {
        const float* xp = rows[i] + (wo * g.stride + j * g.dilation) * C;
        for (int64_t c = 0; c < C; ++c) out[c] += xp[c] * gd[wo * C + c];
      }
    }
}

// gz[ho * s + i * d, wo * s + j * d, :] += dw[i, j, :] * gd[wo, :] for output
// row ho, into the zero-bordered gz of one sample (g.wp columns per row).
template <int kC>
void DepthwiseScatterRow(const Geometry& g, int64_t ho, const float* __restrict gd, const float* __restrict dw,
                         float* __restrict gz) {
  const int64_t C = kC > 0 ? kC : g.c;
  for (int64_t i = 0; i < g.k; ++i) {
    float* row = gz + (ho * g.stride + i * g.dilation) * g.wp * C;
#ifdef NAS_JAX_AVX2
    if constexpr (kC > 0 && kC % 8 == 0) {
      for (int v = 0; v < kC / 8; ++v)
        for (int64_t j = 0; j < g.k; ++j) {
          const __m256 w = _mm256_loadu_ps(dw + (i * g.k + j) * kC + 8 * v);
          float* out = row + j * g.dilation * kC + 8 * v;
          for (int64_t wo = 0; wo < g.wo; ++wo) {
            float* o = out + wo * g.stride * kC;
            _mm256_storeu_ps(o, _mm256_fmadd_ps(w, _mm256_loadu_ps(gd + wo * kC + 8 * v), _mm256_loadu_ps(o)));
          }
        }
      continue;
    }
#endif
    for (int64_t j = 0; j < g.k; ++j) {
      const float* w = dw + (i * g.k + j) * C;
      for (int64_t wo = 0; wo < g.wo; ++wo) {
        float* o = row + (wo * g.stride + j * g.dilation) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += w[c] * gd[wo * C + c];
      }
    }
  }
}

// The ReLU (and input affine) backward of one row of g.w columns:
// gx = gz * [pre > 0] * a (affine) or gz * [x > 0]; ga += gz * [pre > 0] * x, gb += gz * [pre > 0].
template <int kC>
void ReluBackwardRow(const Geometry& g, const float* __restrict x, const float* __restrict a,
                     const float* __restrict b, const float* __restrict gz, float* __restrict gx,
                     float* __restrict ga, float* __restrict gb) {
  const int64_t C = kC > 0 ? kC : g.c;
#ifdef NAS_JAX_AVX2
  if (C % 8 == 0) {
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t c = 0; c < C; c += 8) {
      const __m256 av = _mm256_loadu_ps(a + c), bv = _mm256_loadu_ps(b + c);
      __m256 sa = zero, sb = zero;
      for (int64_t col = 0; col < g.w; ++col) {
        const __m256 xv = _mm256_loadu_ps(x + col * C + c);
        const __m256 pre = g.affine ? _mm256_fmadd_ps(xv, av, bv) : xv;
        const __m256 gv = _mm256_and_ps(_mm256_cmp_ps(pre, zero, _CMP_GT_OQ), _mm256_loadu_ps(gz + col * C + c));
        if (g.affine) {
          _mm256_storeu_ps(gx + col * C + c, _mm256_mul_ps(gv, av));
          sa = _mm256_fmadd_ps(gv, xv, sa);
          sb = _mm256_add_ps(sb, gv);
        } else {
          _mm256_storeu_ps(gx + col * C + c, gv);
        }
      }
      if (g.affine) {
        _mm256_storeu_ps(ga + c, _mm256_add_ps(_mm256_loadu_ps(ga + c), sa));
        _mm256_storeu_ps(gb + c, _mm256_add_ps(_mm256_loadu_ps(gb + c), sb));
      }
    }
    return;
  }
#endif
  for (int64_t col = 0; col < g.w; ++col)
    for (int64_t c = 0; c < C; ++c) {
      const float xv = x[col * C + c];
      const float pre = g.affine ? xv * a[c] + b[c] : xv;
      const float gv = pre > 0.0f ? gz[col * C + c] : 0.0f;
      if (g.affine) {
        gx[col * C + c] = gv * a[c];
        ga[c] += gv * xv;
        gb[c] += gv;
      } else {
        gx[col * C + c] = gv;
      }
    }
}

struct BackwardFns {
  void (*transform)(const Geometry&, const float*, const float*, const float*, float*);
  void (*depthwise)(const Geometry&, const float* const*, const float*, float*);
  void (*dw_grad)(const Geometry&, const float* const*, const float*, float*);
  void (*scatter)(const Geometry&, int64_t, const float*, const float*, float*);
  void (*relu_back)(const Geometry&, const float*, const float*, const float*, const float*, float*, float*, float*);
  void (*matmul_gd)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);  // N = C
  void (*pw_grad)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
  void (*total)(int64_t, int64_t, const float*, const float*, const float*, const float*, float*);
};

BackwardFns PickBackwardFns(const Geometry& g) {
  BackwardFns f;
  DispatchWidth(g.c, [&]<int kC>() {
    f.transform = &TransformRow<kC>;
    f.depthwise = &DepthwiseRow<kC>;
    f.dw_grad = &DepthwiseWeightGradRow<kC>;
    f.scatter = &DepthwiseScatterRow<kC>;
    f.relu_back = &ReluBackwardRow<kC>;
    f.matmul_gd = &nas_jax::MatmulRows<kC>;
  });
  DispatchWidth(g.cout, [&]<int kN>() {
    f.pw_grad = &nas_jax::WeightGradRows<kN>;
    f.total = &TotalGradRow<kN>;
  });
  return f;
}

// The per-chunk partial sums of the parameter gradients.
struct Partials {
  float *gpw, *gdw, *ga, *gb;
};

struct BackwardArgs {
  const float *x, *a, *b, *dw, *pw, *pwt, *y, *gy, *c0, *c1;
  float* gx;
};

// Output row r's share (r = n * ho + ho): gt, gpw += d^T gt, gd = gt pw^T (d: wo x C).
void RowGradients(const Geometry& g, const BackwardFns& f, const BackwardArgs& in, const float* d, int64_t r,
                  float* gt, float* gd, const Partials& part) {
  const int64_t at = r * g.wo * g.cout;
  f.total(g.wo, g.cout, in.gy + at, in.c0, in.c1, in.y + at, gt);
  f.pw_grad(d, gt, part.gpw, 0, g.wo, g.c, g.cout);
  f.matmul_gd(gt, in.pwt, gd, 0, g.wo, g.cout, g.c);
}

// Samples [n0, n1) of the depthwise variant. The transpose of the depthwise
// convolution: at stride 1 with the register-blocked rows
// (nas_jax::DepthwiseRowAvx), the forward convolution of the sample's gd with
// the kernel flipped ('same' padding is symmetric), one gz row at a time;
// otherwise a scatter of each gd row into a zero-bordered gz.
void BackwardSamples(const Geometry& g, const BackwardFns& f, const BackwardArgs& in, const float* flipped,
                     int64_t n0, int64_t n1, const Partials& part) {
  const int64_t C = g.c;
  const bool gather = flipped != nullptr;
  nas_jax::RowRing ring(g.k, g.stride, g.dilation, g.pad, g.wp, C);
  std::vector<float> d(g.wo * C), gt(g.wo * g.cout);
  // gather: gd of the whole sample, then one gz row; scatter: one gd row, then gz with its border.
  std::vector<float> gd(gather ? g.ho * g.wo * C : g.wo * C), gz(gather ? g.w * C : (g.h + 2 * g.pad) * g.wp * C);
  for (int64_t n = n0; n < n1; ++n) {
    const float* sample = in.x + n * g.h * g.w * C;
    if (!gather) std::fill(gz.begin(), gz.end(), 0.0f);
    for (int64_t ho = 0; ho < g.ho; ++ho) {
      const float* const* taps = ring.Taps(n, ho, g.h, [&](int64_t hi, float* dst) {
        f.transform(g, sample + hi * g.w * C, in.a, in.b, dst);
      });
      f.depthwise(g, taps, in.dw, d.data());
      float* gd_row = gather ? gd.data() + ho * g.wo * C : gd.data();
      RowGradients(g, f, in, d.data(), n * g.ho + ho, gt.data(), gd_row, part);
      f.dw_grad(g, taps, gd_row, part.gdw);
      if (!gather) f.scatter(g, ho, gd_row, in.dw, gz.data());
    }
    if (gather) {
      nas_jax::RowRing gd_ring(g.k, 1, g.dilation, g.pad, g.wp, C);
      for (int64_t hi = 0; hi < g.h; ++hi) {
        const float* const* rows = gd_ring.Taps(n, hi, g.ho, [&](int64_t r, float* dst) {
          std::memcpy(dst, gd.data() + r * g.wo * C, sizeof(float) * g.wo * C);
        });
        f.depthwise(g, rows, flipped, gz.data());
        f.relu_back(g, sample + hi * g.w * C, in.a, in.b, gz.data(), in.gx + (n * g.h + hi) * g.w * C, part.ga,
                    part.gb);
      }
      continue;
    }
    for (int64_t hi = 0; hi < g.h; ++hi)
      f.relu_back(g, sample + hi * g.w * C, in.a, in.b, gz.data() + ((hi + g.pad) * g.wp + g.pad) * C,
                  in.gx + (n * g.h + hi) * g.w * C, part.ga, part.gb);
  }
}

// Rows [r0, r1) (of N * H) of the 1x1 variant.
void BackwardRows1x1(const Geometry& g, const BackwardFns& f, const BackwardArgs& in, int64_t r0, int64_t r1,
                     const Partials& part) {
  const int64_t C = g.c;
  std::vector<float> z(g.w * C), gt(g.w * g.cout), gz(g.w * C);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = in.x + r * g.w * C;
    f.transform(g, xr, in.a, in.b, z.data());
    RowGradients(g, f, in, z.data(), r, gt.data(), gz.data(), part);
    f.relu_back(g, xr, in.a, in.b, gz.data(), in.gx + r * g.w * C, part.ga, part.gb);
  }
}

constexpr int64_t kMaxBackwardChunks = 16;

ffi::Error Backward(ffi::ThreadPool& pool, const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& a,
                    const ffi::Buffer<ffi::F32>& b, const float* dw, int64_t k, const ffi::Buffer<ffi::F32>& pw,
                    const ffi::Buffer<ffi::F32>& y, const ffi::Buffer<ffi::F32>& gy, const ffi::Buffer<ffi::F32>& c0,
                    const ffi::Buffer<ffi::F32>& c1, ffi::ResultBuffer<ffi::F32>& gx, ffi::ResultBuffer<ffi::F32>& ga,
                    ffi::ResultBuffer<ffi::F32>& gb, float* gdw, ffi::ResultBuffer<ffi::F32>& gpw, int64_t stride,
                    int64_t dilation, int64_t affine) {
  auto geometry = MakeGeometry(x.dimensions(), gy.dimensions(), pw.dimensions(), a, b, k, stride, dilation, affine);
  if (geometry.has_error()) return geometry.error();
  const Geometry& g = *geometry;
  if (y.dimensions().size() != 4 || y.element_count() != gy.element_count() || c0.element_count() != g.cout ||
      c1.element_count() != g.cout)
    return ffi::Error::InvalidArgument("fused backward: y must have gy's shape, c0 and c1 Cout elements");
  const BackwardFns f = PickBackwardFns(g);
  std::vector<float> pwt(g.c * g.cout);  // pw^T: gd = gt @ pw^T
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t o = 0; o < g.cout; ++o) pwt[o * g.c + c] = pw.typed_data()[c * g.cout + o];
  const BackwardArgs in{x.typed_data(),  a.typed_data(),  b.typed_data(),  dw,
                        pw.typed_data(), pwt.data(),      y.typed_data(),  gy.typed_data(),
                        c0.typed_data(), c1.typed_data(), gx->typed_data()};
  // Stride 1 on the register-blocked rows: the depthwise transpose as a forward with the kernel flipped.
  bool gather = false;
  DispatchWidth(g.c, [&]<int kC>() { gather = k > 0 && stride == 1 && nas_jax::DepthwiseRowAvxHandles<kC>(k); });
  const std::vector<float> flipped = gather ? nas_jax::FlippedKernel(dw, k, g.c) : std::vector<float>();
  const int64_t units = k > 0 ? g.n : g.n * g.h;  // samples, or rows of the 1x1 variant
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kMaxBackwardChunks, units));
  const int64_t sizes[4] = {g.c * g.cout, k * k * g.c, g.c, g.c};
  const int64_t stride_all = sizes[0] + sizes[1] + sizes[2] + sizes[3];
  std::vector<float> parts(chunks * stride_all, 0.0f);
  ParallelFor(pool, chunks, [&](int64_t ch) {
    float* base = parts.data() + ch * stride_all;
    const Partials part{base, base + sizes[0], base + sizes[0] + sizes[1], base + sizes[0] + sizes[1] + sizes[2]};
    const int64_t u0 = ch * units / chunks, u1 = (ch + 1) * units / chunks;
    if (k > 0) {
      BackwardSamples(g, f, in, gather ? flipped.data() : nullptr, u0, u1, part);
    } else {
      BackwardRows1x1(g, f, in, u0, u1, part);
    }
  });
  std::vector<float> total(stride_all);
  nas_jax::SumPartialsInOrder(parts, chunks, stride_all, total.data());
  std::memcpy(gpw->typed_data(), total.data(), sizeof(float) * sizes[0]);
  if (k > 0) std::memcpy(gdw, total.data() + sizes[0], sizeof(float) * sizes[1]);
  std::memcpy(ga->typed_data(), total.data() + sizes[0] + sizes[1], sizeof(float) * sizes[2]);
  std::memcpy(gb->typed_data(), total.data() + sizes[0] + sizes[1] + sizes[2], sizeof(float) * sizes[3]);
  return ffi::Error::Success();
}

ffi::Error DepthwisePointwiseBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                                      ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> dw, ffi::Buffer<ffi::F32> pw,
                                      ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> c0,
                                      ffi::Buffer<ffi::F32> c1,
                                      ffi::ResultBuffer<ffi::F32> gx, ffi::ResultBuffer<ffi::F32> ga,
                                      ffi::ResultBuffer<ffi::F32> gb, ffi::ResultBuffer<ffi::F32> gdw,
                                      ffi::ResultBuffer<ffi::F32> gpw, int64_t stride, int64_t dilation,
                                      int64_t affine) {
  auto wd = dw.dimensions();
  if (wd.size() != 3 || wd[0] != wd[1] || x.dimensions().size() != 4 || wd[2] != x.dimensions()[3])
    return ffi::Error::InvalidArgument("fused backward: dw must be [k, k, C]");
  return Backward(pool, x, a, b, dw.typed_data(), wd[0], pw, y, gy, c0, c1, gx, ga, gb, gdw->typed_data(), gpw, stride,
                  dilation, affine);
}

ffi::Error PointwiseBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                             ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> pw, ffi::Buffer<ffi::F32> y,
                             ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> c1, ffi::ResultBuffer<ffi::F32> gx,
                             ffi::ResultBuffer<ffi::F32> ga, ffi::ResultBuffer<ffi::F32> gb,
                             ffi::ResultBuffer<ffi::F32> gpw, int64_t affine) {
  return Backward(pool, x, a, b, nullptr, 0, pw, y, gy, c0, c1, gx, ga, gb, nullptr, gpw, 1, 1, affine);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedDepthwisePointwiseBackward, DepthwisePointwiseBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dw
                                  .Arg<ffi::Buffer<ffi::F32>>()  // pw
                                  .Arg<ffi::Buffer<ffi::F32>>()  // y
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gy
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c1
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gx
                                  .Ret<ffi::Buffer<ffi::F32>>()  // ga
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gb
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gdw
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gpw
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("affine"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxFusedPointwiseBackward, PointwiseBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // pw
                                  .Arg<ffi::Buffer<ffi::F32>>()  // y
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gy
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c1
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gx
                                  .Ret<ffi::Buffer<ffi::F32>>()  // ga
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gb
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gpw
                                  .Attr<int64_t>("affine"));
