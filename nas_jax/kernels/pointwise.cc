// Pointwise (1x1) convolution, i.e. the matrix products of a [M, K] x [K, N]
// layer, for XLA:CPU through the XLA FFI: forward y = x W, input gradient
// dx = g W^T and weight gradient dW = x^T g, on float32 row-major operands
// whose last axis is the channel axis (any leading shape, flattened to M).
//
// Layer widths here are small (K, N from 3 to a few hundred), where general
// GEMM libraries pay for packing and for writing x^T. These kernels stream the
// rows once: forward and input gradient keep a block of output rows in AVX
// registers; the weight gradient keeps a block of rows of dW in registers
// while it runs down a tile of rows. Widths that are multiples of 8 (all of
// the cell spaces' layers) take AVX2/FMA intrinsics, written out because
// GCC's auto-vectoriser picks the wrong axis here (shuffles, 6x slower); other
// widths and non-AVX2 builds take plain loops. Rows are split over XLA's intra-op thread pool; the weight
// gradient sums fixed chunks in order, so its bits do not depend on the
// thread count.
//
// The Python side is nas_jax/kernels/pointwise.py.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nas_jax_kernels_common.h"
#include "nas_jax_kernels_matmul.h"

namespace {

using nas_jax::MatmulRows;
using nas_jax::WeightGradRows;

constexpr int64_t kRowsPerItem = 256;   // rows per parallel work item (forward)
constexpr int64_t kWeightGradChunks = 8;

// y [M, N] = x [M, K] @ w [K, N] on the pool.
void Matmul(ffi::ThreadPool& pool, const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N) {
  const int64_t items = (M + kRowsPerItem - 1) / kRowsPerItem;
  nas_jax::DispatchWidth(N, [&]<int kN>() {
    nas_jax::ParallelFor(pool, items, [&](int64_t i) {
      MatmulRows<kN>(x, w, y, i * kRowsPerItem, std::min(M, (i + 1) * kRowsPerItem), K, N);
    });
  });
}

int64_t Rows(const ffi::Buffer<ffi::F32>& b) {
  int64_t m = 1;
  auto d = b.dimensions();
  for (size_t i = 0; i + 1 < d.size(); ++i) m *= d[i];
  return m;
}

int64_t Width(const ffi::Buffer<ffi::F32>& b) { return b.dimensions().back(); }

// y = x @ w
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y) {
  const int64_t M = Rows(x), K = Width(x), N = Width(w);
  if (w.dimensions().size() != 2 || w.dimensions()[0] != K)
    return ffi::Error::InvalidArgument("pointwise: w must be [K, N] with K = x's last axis");
  Matmul(pool, x.typed_data(), w.typed_data(), y->typed_data(), M, K, N);
  return ffi::Error::Success();
}

// dx = g @ w^T (w is [K, N]; the transpose is K*N floats)
ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> dx) {
  const int64_t M = Rows(g), N = Width(g), K = w.dimensions()[0];
  if (w.dimensions().size() != 2 || w.dimensions()[1] != N)
    return ffi::Error::InvalidArgument("pointwise: w must be [K, N] with N = g's last axis");
  std::vector<float> wt(K * N);
  const float* ws = w.typed_data();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) wt[n * K + k] = ws[k * N + n];
  Matmul(pool, g.typed_data(), wt.data(), dx->typed_data(), M, N, K);
  return ffi::Error::Success();
}

// dw = x^T @ g
ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                      ffi::ResultBuffer<ffi::F32> dw) {
  const int64_t M = Rows(x), K = Width(x), N = Width(g);
  if (Rows(g) != M) return ffi::Error::InvalidArgument("pointwise: x and g need the same rows");
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kWeightGradChunks, M / nas_jax::kWeightGradTile));
  std::vector<float> parts(chunks * K * N, 0.0f);
  const float* xs = x.typed_data();
  const float* gs = g.typed_data();
  nas_jax::DispatchWidth(N, [&]<int kN>() {
    nas_jax::ParallelFor(pool, chunks, [&](int64_t c) {
      WeightGradRows<kN>(xs, gs, parts.data() + c * K * N, c * M / chunks, (c + 1) * M / chunks, K, N);
    });
  });
  nas_jax::SumPartialsInOrder(parts, chunks, K * N, dw->typed_data());
  return ffi::Error::Success();
}

}  // namespace

#define NAS_JAX_PW_BIND(name, fn)                                                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                              \
                                ffi::Ffi::Bind()                                       \
                                    .Ctx<ffi::ThreadPool>()                            \
                                    .Arg<ffi::Buffer<ffi::F32>>()                      \
                                    .Arg<ffi::Buffer<ffi::F32>>()                      \
                                    .Ret<ffi::Buffer<ffi::F32>>());

NAS_JAX_PW_BIND(NasJaxPointwiseForward, Forward)
NAS_JAX_PW_BIND(NasJaxPointwiseInputGrad, InputGrad)
NAS_JAX_PW_BIND(NasJaxPointwiseWeightGrad, WeightGrad)
