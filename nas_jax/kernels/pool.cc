// Forward pooling on one of several candidate inputs, for XLA:CPU through the
// XLA FFI: y = pool(candidates[idx]) with 'same' padding, where pool is
//
//   kind 0: average over the k x k window, padded cells not counted
//           (count_include_pad=False, as ops.avg_pool);
//   kind 1: maximum over the window, padded cells ignored (ops.max_pool);
//   kind 2: a copy (k = 1, stride 1: the identity op).
//
// An edge of the weight-sharing supernet picks its input among the cell's
// states with a traced index. In XLA that is a dynamic slice (a full copy of
// the input) and then a padded copy for the window; here the kernel reads the
// chosen state in place, one pass that writes only y. Forward only: the
// primitive in nas_jax/kernels/pick.py differentiates its pure-JAX reference.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "nas_jax_kernels_common.h"
#include "nas_jax_kernels_matmul.h"  // NAS_JAX_AVX2

namespace {

using nas_jax::ParallelFor;

struct PoolGeometry {
  int64_t n, h, w, c, ho, wo, k, stride, pad, kind;
};

// One output row (sample n, output row ho) of a window pool; the window of
// (ho, wo) covers input rows ho*s - pad + i and columns wo*s - pad + j.
template <int kC>
void PoolRow(const PoolGeometry& g, const float* __restrict x, float* __restrict y, int64_t n, int64_t ho) {
  const int64_t C = kC > 0 ? kC : g.c;
  const int64_t i0 = std::max<int64_t>(0, ho * g.stride - g.pad);
  const int64_t i1 = std::min<int64_t>(g.h, ho * g.stride - g.pad + g.k);
  const float* sample = x + n * g.h * g.w * C;
  float* yr = y + (n * g.ho + ho) * g.wo * C;
  const bool is_max = g.kind == 1;
  for (int64_t wo = 0; wo < g.wo; ++wo) {
    const int64_t j0 = std::max<int64_t>(0, wo * g.stride - g.pad);
    const int64_t j1 = std::min<int64_t>(g.w, wo * g.stride - g.pad + g.k);
    float* out = yr + wo * C;
#ifdef NAS_JAX_AVX2
    if constexpr (kC > 0 && kC % 8 == 0) {
      constexpr int kV = kC / 8;
      __m256 acc[kV];
      for (int v = 0; v < kV; ++v)
        acc[v] = is_max ? _mm256_set1_ps(-std::numeric_limits<float>::infinity()) : _mm256_setzero_ps();
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) {
          const float* px = sample + (i * g.w + j) * kC;
          for (int v = 0; v < kV; ++v) {
            const __m256 t = _mm256_loadu_ps(px + 8 * v);
            acc[v] = is_max ? _mm256_max_ps(acc[v], t) : _mm256_add_ps(acc[v], t);
          }
        }
      if (!is_max) {
        const __m256 inv = _mm256_set1_ps(1.0f / static_cast<float>((i1 - i0) * (j1 - j0)));
        for (int v = 0; v < kV; ++v) acc[v] = _mm256_mul_ps(acc[v], inv);
      }
      for (int v = 0; v < kV; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
      continue;
    }
#endif
    for (int64_t c = 0; c < C; ++c) out[c] = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const float* px = sample + (i * g.w + j) * C;
        for (int64_t c = 0; c < C; ++c) out[c] = is_max ? std::max(out[c], px[c]) : out[c] + px[c];
      }
    if (!is_max) {
      const float inv = 1.0f / static_cast<float>((i1 - i0) * (j1 - j0));
      for (int64_t c = 0; c < C; ++c) out[c] *= inv;
    }
  }
}

ffi::Error PoolPick(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> idx, ffi::RemainingArgs candidates,
                    ffi::ResultBuffer<ffi::F32> y, int64_t kind, int64_t stride, int64_t kernel) {
  if (idx.element_count() != 1) return ffi::Error::InvalidArgument("pool pick: idx must be a scalar");
  const int64_t i = idx.typed_data()[0];
  if (i < 0 || i >= static_cast<int64_t>(candidates.size()))
    return ffi::Error::InvalidArgument("pool pick: idx out of range of the candidate inputs");
  auto x = candidates.get<ffi::Buffer<ffi::F32>>(i);
  if (x.has_error()) return x.error();
  auto xd = x->dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || xd[0] != yd[0] || xd[3] != yd[3])
    return ffi::Error::InvalidArgument("pool pick: need x [N, H, W, C] and y [N, Ho, Wo, C]");
  if (kind < 0 || kind > 2 || kernel < 1 || kernel % 2 == 0 || stride < 1 || (kind == 2 && (kernel != 1 || stride != 1)))
    return ffi::Error::InvalidArgument("pool pick: kind 0/1 (avg/max) with an odd kernel, or kind 2 (copy) with k = 1");
  PoolGeometry g{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], kernel, stride, (kernel - 1) / 2, kind};
  if (g.ho != (g.h - 1) / stride + 1 || g.wo != (g.w - 1) / stride + 1)
    return ffi::Error::InvalidArgument("pool pick: output shape mismatch");
  const float* xs = x->typed_data();
  float* ys = y->typed_data();
  const int64_t rows = g.n * g.ho;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, rows));
  if (kind == 2) {
    const int64_t per_row = g.w * g.c;
    ParallelFor(pool, chunks, [&](int64_t ch) {
      const int64_t r0 = ch * rows / chunks, r1 = (ch + 1) * rows / chunks;
      std::memcpy(ys + r0 * per_row, xs + r0 * per_row, sizeof(float) * (r1 - r0) * per_row);
    });
    return ffi::Error::Success();
  }
  void (*row_fn)(const PoolGeometry&, const float*, float*, int64_t, int64_t) = nullptr;
  nas_jax::DispatchWidth(g.c, [&]<int kC>() { row_fn = &PoolRow<kC>; });
  ParallelFor(pool, chunks, [&](int64_t ch) {
    for (int64_t r = ch * rows / chunks; r < (ch + 1) * rows / chunks; ++r) row_fn(g, xs, ys, r / g.ho, r % g.ho);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxPoolPick, PoolPick,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("kernel"));
