// Row-block matrix products shared by the pointwise and fused kernels
// (pointwise.cc, fused.cc): y[m, :N] = x[m, :K] @ w[:K, :N] over a range of
// rows, with AVX2/FMA intrinsics for widths that are multiples of 8 (GCC's
// auto-vectoriser picks the wrong axis here: shuffles, 6x slower) and plain
// loops otherwise.
#ifndef NAS_JAX_KERNELS_MATMUL_H_
#define NAS_JAX_KERNELS_MATMUL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NAS_JAX_AVX2 1
#endif

namespace nas_jax {

// y[m, :N] = sum_k x[m, k] * w[k, :N] for m in [m0, m1); w is [K, N].
inline void MatmulRowsGeneric(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t K,
                       int64_t N) {
  std::vector<float> acc(N);
  for (int64_t m = m0; m < m1; ++m) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float xv = x[m * K + k];
      const float* wk = w + k * N;
      for (int64_t n = 0; n < N; ++n) acc[n] += xv * wk[n];
    }
    std::memcpy(y + m * N, acc.data(), sizeof(float) * N);
  }
}

#ifdef NAS_JAX_AVX2
// The same for kN (a multiple of 8) columns of w and y, whose rows are ldw
// and ldy floats apart: kR rows at a time, kN/8 registers per row.
template <int kN, int kR>
void MatmulRowsAvx(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t K, int64_t ldw,
                   int64_t ldy) {
  constexpr int kV = kN / 8;
  int64_t m = m0;
  for (; m + kR <= m1; m += kR) {
    __m256 acc[kR][kV];
    for (int r = 0; r < kR; ++r)
      for (int v = 0; v < kV; ++v) acc[r][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const float* wk = w + k * ldw;
      for (int r = 0; r < kR; ++r) {
        const __m256 xv = _mm256_broadcast_ss(x + (m + r) * K + k);
        for (int v = 0; v < kV; ++v) acc[r][v] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wk + 8 * v), acc[r][v]);
      }
    }
    for (int r = 0; r < kR; ++r)
      for (int v = 0; v < kV; ++v) _mm256_storeu_ps(y + (m + r) * ldy + 8 * v, acc[r][v]);
  }
  if constexpr (kR > 1) {
    MatmulRowsAvx<kN, 1>(x, w, y, m, m1, K, ldw, ldy);
  }
}

// Any N that is a multiple of 8: blocks of 16 columns, then one of 8.
inline void MatmulRowsAvxBlocked(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t K,
                          int64_t N) {
  int64_t n0 = 0;
  for (; n0 + 16 <= N; n0 += 16) MatmulRowsAvx<16, 4>(x, w + n0, y + n0, m0, m1, K, N, N);
  if (n0 < N) MatmulRowsAvx<8, 4>(x, w + n0, y + n0, m0, m1, K, N, N);
}
#endif

template <int kN>
void MatmulRows(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t K, int64_t N) {
#ifdef NAS_JAX_AVX2
  if constexpr (kN > 0) {
    // Row blocks that keep kR * kN / 8 accumulators in the 16 AVX registers.
    constexpr int kR = kN <= 16 ? 4 : (kN <= 32 ? 2 : 1);
    MatmulRowsAvx<kN, kR>(x, w, y, m0, m1, K, kN, kN);
    return;
  }
  if (N % 8 == 0) {
    MatmulRowsAvxBlocked(x, w, y, m0, m1, K, N);
    return;
  }
#endif
  MatmulRowsGeneric(x, w, y, m0, m1, K, N);
}

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_MATMUL_H_
