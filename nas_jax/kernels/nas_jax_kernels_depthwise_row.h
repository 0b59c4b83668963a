// One output row of a depthwise convolution from k zero-bordered input rows,
// shared by the depthwise and fused kernels (depthwise.cc, fused.cc):
//
//   d[wo, :] = sum_{i, j} dw[i, j, :] * rows[i][wo * stride + j * dilation, :]
//
// for channel counts kC that are multiples of 8 and k <= 7, with AVX2/FMA.
// Per group of 8 channels the taps stay in registers along the row (all k * k
// of them for k = 3; one row of k at a time, summed in d, otherwise): one load
// per FMA instead of two. The sums run in the order i, then j, from zero, as
// the plain loops of both kernels do.
#ifndef NAS_JAX_KERNELS_DEPTHWISE_ROW_H_
#define NAS_JAX_KERNELS_DEPTHWISE_ROW_H_

#include <cstdint>

#include "nas_jax_kernels_matmul.h"  // NAS_JAX_AVX2, immintrin.h

namespace nas_jax {

constexpr int64_t kMaxRegisterTaps = 7;

// Whether DepthwiseRowAvx<kC> handles kernel size k on this build.
template <int kC>
constexpr bool DepthwiseRowAvxHandles(int64_t k) {
#ifdef NAS_JAX_AVX2
  return kC > 0 && kC % 8 == 0 && k <= kMaxRegisterTaps;
#else
  return false;
#endif
}

template <int kC>
void DepthwiseRowAvx(const float* const* rows, const float* __restrict dw, float* __restrict d, int64_t k,
                     int64_t wo_count, int64_t stride, int64_t dilation) {
#ifdef NAS_JAX_AVX2
  if constexpr (kC > 0 && kC % 8 == 0) {
    constexpr int kV = kC / 8;
    const int64_t step = stride * kC, dil = dilation * kC;
    if (k == 3) {
      for (int v = 0; v < kV; ++v) {
        __m256 w[9];
        for (int t = 0; t < 9; ++t) w[t] = _mm256_loadu_ps(dw + t * kC + 8 * v);
        const float* r0 = rows[0] + 8 * v;
        const float* r1 = rows[1] + 8 * v;
        const float* r2 = rows[2] + 8 * v;
        for (int64_t wo = 0, o = 0; wo < wo_count; ++wo, o += step) {
          __m256 acc = _mm256_mul_ps(w[0], _mm256_loadu_ps(r0 + o));
          acc = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(r0 + o + dil), acc);
          acc = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(r0 + o + 2 * dil), acc);
          acc = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(r1 + o), acc);
          acc = _mm256_fmadd_ps(w[4], _mm256_loadu_ps(r1 + o + dil), acc);
          acc = _mm256_fmadd_ps(w[5], _mm256_loadu_ps(r1 + o + 2 * dil), acc);
          acc = _mm256_fmadd_ps(w[6], _mm256_loadu_ps(r2 + o), acc);
          acc = _mm256_fmadd_ps(w[7], _mm256_loadu_ps(r2 + o + dil), acc);
          acc = _mm256_fmadd_ps(w[8], _mm256_loadu_ps(r2 + o + 2 * dil), acc);
          _mm256_storeu_ps(d + wo * kC + 8 * v, acc);
        }
      }
      return;
    }
    for (int v = 0; v < kV; ++v)
      for (int64_t i = 0; i < k; ++i) {
        __m256 w[kMaxRegisterTaps];
        for (int64_t j = 0; j < k; ++j) w[j] = _mm256_loadu_ps(dw + (i * k + j) * kC + 8 * v);
        const float* row = rows[i] + 8 * v;
        for (int64_t wo = 0, o = 0; wo < wo_count; ++wo, o += step) {
          float* out = d + wo * kC + 8 * v;
          __m256 acc = i == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(out);
          for (int64_t j = 0; j < k; ++j) acc = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(row + o + j * dil), acc);
          _mm256_storeu_ps(out, acc);
        }
      }
  }
#endif
}

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_DEPTHWISE_ROW_H_
