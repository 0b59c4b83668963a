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
#include <cstring>
#include <vector>

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

// The kernel dw [k, k, c] flipped in both spatial axes: a stride-1 'same'
// depthwise convolution's input gradient is the forward convolution of the
// output gradient with it (the padding is symmetric).
inline std::vector<float> FlippedKernel(const float* dw, int64_t k, int64_t c) {
  std::vector<float> flipped(k * k * c);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(flipped.data() + (i * k + j) * c, dw + ((k - 1 - i) * k + (k - 1 - j)) * c, sizeof(float) * c);
  return flipped;
}

// The k input rows of each output row, zero-bordered (wp = w + 2 * pad columns
// of c floats), kept in a ring of span + stride rows (span = dilation * (k - 1)
// + 1), slot = input row mod ring size: one output row's k input rows and the
// next one's are all distinct there, so walking the output rows of a sample in
// order fills each input row once. Rows outside the image read a zero row.
class RowRing {
 public:
  RowRing(int64_t k, int64_t stride, int64_t dilation, int64_t pad, int64_t wp, int64_t c)
      : k_(k), stride_(stride), dilation_(dilation), pad_(pad), c_(c), row_(wp * c),
        size_(dilation * (k - 1) + 1 + stride), rows_(size_ * row_, 0.0f), zero_(row_, 0.0f), tag_(size_, -1),
        taps_(k) {}

  // Row pointers for output row ho of sample n (input height h); fill(hi, dst)
  // writes input row hi into dst, the row's interior (past the left border).
  template <typename Fill>
  const float* const* Taps(int64_t n, int64_t ho, int64_t h, Fill&& fill) {
    for (int64_t i = 0; i < k_; ++i) {
      const int64_t hi = ho * stride_ + i * dilation_ - pad_;
      if (hi < 0 || hi >= h) {
        taps_[i] = zero_.data();
        continue;
      }
      const int64_t slot = hi % size_;
      float* row = rows_.data() + slot * row_;
      if (tag_[slot] != n * h + hi) {
        fill(hi, row + pad_ * c_);
        tag_[slot] = n * h + hi;
      }
      taps_[i] = row;
    }
    return taps_.data();
  }

 private:
  int64_t k_, stride_, dilation_, pad_, c_, row_, size_;
  std::vector<float> rows_, zero_;  // borders stay zero
  std::vector<int64_t> tag_;        // n * h + input row held by each slot
  std::vector<const float*> taps_;
};

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_DEPTHWISE_ROW_H_
