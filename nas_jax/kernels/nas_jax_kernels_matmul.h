// Row-block matrix products shared by the pointwise and fused kernels
// (pointwise.cc, fused.cc): y[m, :N] = x[m, :K] @ w[:K, :N] over a range of
// rows, and the weight gradient dw[:K, :N] += x[m0:m1, :K]^T @ g[m0:m1, :N];
// with AVX2/FMA intrinsics for widths that are multiples of 8 (GCC's
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
  for (; n0 + 16 <= N; n0 += 16) MatmulRowsAvx<16, 6>(x, w + n0, y + n0, m0, m1, K, N, N);
  if (n0 < N) MatmulRowsAvx<8, 8>(x, w + n0, y + n0, m0, m1, K, N, N);
}
#endif

template <int kN>
void MatmulRows(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t K, int64_t N) {
#ifdef NAS_JAX_AVX2
  if constexpr (kN > 0) {
    // Row blocks that keep kR * kN / 8 accumulators in the 16 AVX registers,
    // by measurement (2-core EPYC, 32-row calls): for kN = 16, 6 rows take
    // 0.55-0.7x the time of 4; for kN = 8, 8 rows 0.6-0.7x of 4; for kN = 32
    // and 48, 2 and 1 rows beat 3 and 2.
    constexpr int kR = kN <= 8 ? 8 : (kN <= 16 ? 6 : (kN <= 24 ? 4 : (kN <= 32 ? 2 : 1)));
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

constexpr int64_t kWeightGradTile = 64;  // rows per tile of WeightGradRows

// dw[k, :N] += sum_{m in [m0, m1)} x[m, k] * g[m, :N] for k in [k0, K)
inline void WeightGradRowsGeneric(const float* x, const float* g, float* dw, int64_t m0, int64_t m1, int64_t k0,
                           int64_t K, int64_t N) {
  for (int64_t t0 = m0; t0 < m1; t0 += kWeightGradTile) {
    const int64_t t1 = std::min(m1, t0 + kWeightGradTile);
    for (int64_t k = k0; k < K; ++k) {
      float* dk = dw + k * N;
      for (int64_t m = t0; m < t1; ++m) {
        const float xv = x[m * K + k];
        const float* gm = g + m * N;
        for (int64_t n = 0; n < N; ++n) dk[n] += xv * gm[n];
      }
    }
  }
}

#ifdef NAS_JAX_AVX2
// Rows [k0, k0 + kB) of dW (kB * kN / 8 accumulators in registers), summed
// over rows [m0, m1) a tile at a time.
template <int kN, int kB>
void WeightGradBlockAvx(const float* x, const float* g, float* dw, int64_t m0, int64_t m1, int64_t k0, int64_t K) {
  constexpr int kV = kN / 8;
  for (int64_t t0 = m0; t0 < m1; t0 += kWeightGradTile) {
    const int64_t t1 = std::min(m1, t0 + kWeightGradTile);
    __m256 acc[kB][kV];
    for (int b = 0; b < kB; ++b)
      for (int v = 0; v < kV; ++v) acc[b][v] = _mm256_setzero_ps();
    for (int64_t m = t0; m < t1; ++m) {
      __m256 gv[kV];
      for (int v = 0; v < kV; ++v) gv[v] = _mm256_loadu_ps(g + m * kN + 8 * v);
      for (int b = 0; b < kB; ++b) {
        const __m256 xv = _mm256_broadcast_ss(x + m * K + k0 + b);
        for (int v = 0; v < kV; ++v) acc[b][v] = _mm256_fmadd_ps(xv, gv[v], acc[b][v]);
      }
    }
    for (int b = 0; b < kB; ++b)
      for (int v = 0; v < kV; ++v) {
        float* d = dw + (k0 + b) * kN + 8 * v;
        _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), acc[b][v]));
      }
  }
}
#endif

// dw[:K, :N] += x[m0:m1, :K]^T @ g[m0:m1, :N]; x rows are K floats apart, g's N.
template <int kN>
void WeightGradRows(const float* x, const float* g, float* dw, int64_t m0, int64_t m1, int64_t K, int64_t N) {
#ifdef NAS_JAX_AVX2
  if constexpr (kN > 0) {
    // Blocks of kB rows of dW, then the remaining rows one at a time.
    constexpr int kV = kN / 8;
    constexpr int kB = kV <= 2 ? 6 : (kV <= 4 ? 3 : (kV <= 6 ? 2 : 1));
    int64_t k0 = 0;
    for (; k0 + kB <= K; k0 += kB) WeightGradBlockAvx<kN, kB>(x, g, dw, m0, m1, k0, K);
    for (; k0 < K; ++k0) WeightGradBlockAvx<kN, 1>(x, g, dw, m0, m1, k0, K);
    return;
  }
#endif
  WeightGradRowsGeneric(x, g, dw, m0, m1, 0, K, N);
}

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_MATMUL_H_
