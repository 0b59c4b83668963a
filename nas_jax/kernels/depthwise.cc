// Depthwise 2-D convolution on NHWC float32 tensors for XLA:CPU, through the
// XLA FFI: forward, input gradient and weight gradient.
//
// Weights are [k, k, C]; padding is 'same' for odd k: pad = dilation*(k-1)/2.
// Output size Ho = (H + 2*pad - dilation*(k-1) - 1) / stride + 1.
//
// The channel axis is innermost everywhere (a compile-time constant for the
// common channel counts), so the compiler turns the C loops into whole AVX
// registers. Forward and input gradient gather each output's taps in
// registers and write it once; the weight gradient sums each tap over an
// output row in registers. Work is split over the batch axis and run on XLA's
// intra-op thread pool; results do not depend on the thread count.
//
// The Python side (primitives, derivatives, batching) is
// nas_jax/kernels/depthwise.py; nas_jax/kernels/build.py compiles this file.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nas_jax_kernels_common.h"
#include "nas_jax_kernels_depthwise_row.h"

namespace {

using nas_jax::DispatchWidth;
using nas_jax::ParallelFor;

constexpr int64_t kWeightGradChunks = 8;

struct Geometry {
  int64_t n, h, w, c, k, ho, wo, stride, dilation, pad;
};

// The channel count as a compile-time constant where it is a common one, so
// the C loops below unroll into whole AVX registers; 0 means "read g.c".
template <int kC>
inline int64_t Channels(const Geometry& g) { return kC > 0 ? kC : g.c; }

// Output columns wo whose input column wo*s + off lies inside [0, W).
inline void ValidColumns(const Geometry& g, int64_t off, int64_t* lo, int64_t* hi) {
  *lo = off >= 0 ? 0 : (-off + g.stride - 1) / g.stride;
  *hi = std::min<int64_t>(g.wo, (g.w - 1 - off) / g.stride + 1);
}

// y[n, ho, wo, :] = sum_{i,j} w[i, j, :] * x[n, ho*s + i*d - p, wo*s + j*d - p, :]
template <int kC>
void ForwardSample(const Geometry& g, const float* x, const float* w, float* y) {
  const int64_t C = Channels<kC>(g);
  nas_jax::AccumulatorRow<kC> acc(C);
  float* a = acc.data();
  for (int64_t ho = 0; ho < g.ho; ++ho) {
    for (int64_t wo = 0; wo < g.wo; ++wo) {
      for (int64_t c = 0; c < C; ++c) a[c] = 0.0f;
      for (int64_t i = 0; i < g.k; ++i) {
        int64_t hi = ho * g.stride + i * g.dilation - g.pad;
        if (hi < 0 || hi >= g.h) continue;
        for (int64_t j = 0; j < g.k; ++j) {
          int64_t wi = wo * g.stride + j * g.dilation - g.pad;
          if (wi < 0 || wi >= g.w) continue;
          const float* wt = w + (i * g.k + j) * C;
          const float* xp = x + (hi * g.w + wi) * C;
          for (int64_t c = 0; c < C; ++c) a[c] += wt[c] * xp[c];
        }
      }
      float* yp = y + (ho * g.wo + wo) * C;
      for (int64_t c = 0; c < C; ++c) yp[c] = a[c];
    }
  }
}

// The forward of one sample row by row, for the channel counts and kernel
// sizes of DepthwiseRowAvx: input rows are copied once into a
// nas_jax::RowRing of zero-bordered rows and each output row is one
// register-blocked pass. Same sums, in the same order, as ForwardSample (the
// border taps add zeros).
template <int kC>
void ForwardSampleRows(const Geometry& g, const float* x, const float* w, float* y) {
  nas_jax::RowRing ring(g.k, g.stride, g.dilation, g.pad, g.w + 2 * g.pad, kC);
  for (int64_t ho = 0; ho < g.ho; ++ho) {
    const float* const* taps = ring.Taps(0, ho, g.h, [&](int64_t hi, float* dst) {
      std::memcpy(dst, x + hi * g.w * kC, sizeof(float) * g.w * kC);
    });
    nas_jax::DepthwiseRowAvx<kC>(taps, w, y + ho * g.wo * kC, g.k, g.wo, g.stride, g.dilation);
  }
}

// dx[n, h, w, :] = sum of w[i, j, :] * g[n, ho, wo, :] over the taps with
// h = ho*s + i*d - p and w = wo*s + j*d - p (a gather: each input position
// sums its taps in registers and is written once).
template <int kC>
void InputGradSample(const Geometry& g, const float* gy, const float* w, float* dx) {
  const int64_t C = Channels<kC>(g);
  nas_jax::AccumulatorRow<kC> acc(C);
  float* a = acc.data();
  for (int64_t h = 0; h < g.h; ++h) {
    for (int64_t x = 0; x < g.w; ++x) {
      for (int64_t c = 0; c < C; ++c) a[c] = 0.0f;
      for (int64_t i = 0; i < g.k; ++i) {
        int64_t num_h = h + g.pad - i * g.dilation;  // = ho * s
        if (num_h < 0 || num_h % g.stride) continue;
        int64_t ho = num_h / g.stride;
        if (ho >= g.ho) continue;
        for (int64_t j = 0; j < g.k; ++j) {
          int64_t num_w = x + g.pad - j * g.dilation;
          if (num_w < 0 || num_w % g.stride) continue;
          int64_t wo = num_w / g.stride;
          if (wo >= g.wo) continue;
          const float* wt = w + (i * g.k + j) * C;
          const float* gp = gy + (ho * g.wo + wo) * C;
          for (int64_t c = 0; c < C; ++c) a[c] += wt[c] * gp[c];
        }
      }
      float* dp = dx + (h * g.w + x) * C;
      for (int64_t c = 0; c < C; ++c) dp[c] = a[c];
    }
  }
}

// dw[i, j, :] += sum_{ho, wo} x[n, ho*s + i*d - p, wo*s + j*d - p, :] * g[n, ho, wo, :]
template <int kC>
void WeightGradSample(const Geometry& g, const float* x, const float* gy, float* dw) {
  const int64_t C = Channels<kC>(g);
  nas_jax::AccumulatorRow<kC> acc(C);
  float* a = acc.data();
  for (int64_t ho = 0; ho < g.ho; ++ho) {
    const float* gr = gy + ho * g.wo * C;
    for (int64_t i = 0; i < g.k; ++i) {
      int64_t hi = ho * g.stride + i * g.dilation - g.pad;
      if (hi < 0 || hi >= g.h) continue;
      const float* xr = x + hi * g.w * C;
      for (int64_t j = 0; j < g.k; ++j) {
        int64_t off = j * g.dilation - g.pad, lo, hi_wo;
        ValidColumns(g, off, &lo, &hi_wo);
        for (int64_t c = 0; c < C; ++c) a[c] = 0.0f;
        for (int64_t wo = lo; wo < hi_wo; ++wo) {
          const float* xp = xr + (wo * g.stride + off) * C;
          const float* gp = gr + wo * C;
          for (int64_t c = 0; c < C; ++c) a[c] += xp[c] * gp[c];
        }
        float* out = dw + (i * g.k + j) * C;
        for (int64_t c = 0; c < C; ++c) out[c] += a[c];
      }
    }
  }
}

template <typename D1, typename D2>
Geometry MakeGeometry(const D1& xd, const D2& wd, int64_t ho, int64_t wo, int64_t stride,
                      int64_t dilation) {
  Geometry g;
  g.n = xd[0]; g.h = xd[1]; g.w = xd[2]; g.c = xd[3];
  g.k = wd[0]; g.ho = ho; g.wo = wo;
  g.stride = stride; g.dilation = dilation; g.pad = dilation * (g.k - 1) / 2;
  return g;
}

ffi::Error Check(const Geometry& g) {
  if (g.k % 2 == 0 || g.stride < 1 || g.dilation < 1)
    return ffi::Error::InvalidArgument("depthwise: need an odd kernel, stride >= 1, dilation >= 1");
  int64_t ho = (g.h + 2 * g.pad - g.dilation * (g.k - 1) - 1) / g.stride + 1;
  int64_t wo = (g.w + 2 * g.pad - g.dilation * (g.k - 1) - 1) / g.stride + 1;
  if (ho != g.ho || wo != g.wo) return ffi::Error::InvalidArgument("depthwise: output shape mismatch");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t dilation) {
  auto yd = y->dimensions();
  Geometry g = MakeGeometry(x.dimensions(), w.dimensions(), yd[1], yd[2], stride, dilation);
  if (auto e = Check(g); e.failure()) return e;
  const float* xs = x.typed_data();
  const float* ws = w.typed_data();
  float* ys = y->typed_data();
  DispatchWidth(g.c, [&]<int kC>() {
    ParallelFor(pool, g.n, [&](int64_t n) {
      if (nas_jax::DepthwiseRowAvxHandles<kC>(g.k)) {
        ForwardSampleRows<kC>(g, xs + n * g.h * g.w * g.c, ws, ys + n * g.ho * g.wo * g.c);
        return;
      }
      ForwardSample<kC>(g, xs + n * g.h * g.w * g.c, ws, ys + n * g.ho * g.wo * g.c);
    });
  });
  return ffi::Error::Success();
}

ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t dilation) {
  auto gd = gy.dimensions();
  Geometry g = MakeGeometry(dx->dimensions(), w.dimensions(), gd[1], gd[2], stride, dilation);
  if (auto e = Check(g); e.failure()) return e;
  const float* gs = gy.typed_data();
  const float* ws = w.typed_data();
  float* ds = dx->typed_data();
  // Stride 1: the input gradient is the forward convolution of gy with the
  // kernel flipped in both axes ('same' padding is symmetric), on the fast rows.
  const std::vector<float> flipped = g.stride == 1 ? nas_jax::FlippedKernel(ws, g.k, g.c) : std::vector<float>();
  DispatchWidth(g.c, [&]<int kC>() {
    ParallelFor(pool, g.n, [&](int64_t n) {
      if (g.stride == 1 && nas_jax::DepthwiseRowAvxHandles<kC>(g.k)) {
        ForwardSampleRows<kC>(g, gs + n * g.ho * g.wo * g.c, flipped.data(), ds + n * g.h * g.w * g.c);
        return;
      }
      InputGradSample<kC>(g, gs + n * g.ho * g.wo * g.c, ws, ds + n * g.h * g.w * g.c);
    });
  });
  return ffi::Error::Success();
}

ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gy,
                      ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t dilation) {
  auto gd = gy.dimensions();
  Geometry g = MakeGeometry(x.dimensions(), dw->dimensions(), gd[1], gd[2], stride, dilation);
  if (auto e = Check(g); e.failure()) return e;
  // Fixed chunks of samples, each summed into its own partial in sample
  // order, then the partials in chunk order: the same bits on every run,
  // whatever the thread count or scheduling.
  const int64_t size = g.k * g.k * g.c;
  const int64_t chunks = std::min<int64_t>(g.n, kWeightGradChunks);
  std::vector<float> parts(chunks * size, 0.0f);
  const float* xs = x.typed_data();
  const float* gs = gy.typed_data();
  DispatchWidth(g.c, [&]<int kC>() {
    ParallelFor(pool, chunks, [&](int64_t chunk) {
      for (int64_t n = chunk * g.n / chunks; n < (chunk + 1) * g.n / chunks; ++n)
        WeightGradSample<kC>(g, xs + n * g.h * g.w * g.c, gs + n * g.ho * g.wo * g.c, parts.data() + chunk * size);
    });
  });
  nas_jax::SumPartialsInOrder(parts, chunks, size, dw->typed_data());
  return ffi::Error::Success();
}

}  // namespace

#define NAS_JAX_DW_BIND(name, fn)                                                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                              \
                                ffi::Ffi::Bind()                                       \
                                    .Ctx<ffi::ThreadPool>()                            \
                                    .Arg<ffi::Buffer<ffi::F32>>()                      \
                                    .Arg<ffi::Buffer<ffi::F32>>()                      \
                                    .Ret<ffi::Buffer<ffi::F32>>()                      \
                                    .Attr<int64_t>("stride")                           \
                                    .Attr<int64_t>("dilation"));

NAS_JAX_DW_BIND(NasJaxDepthwiseForward, Forward)
NAS_JAX_DW_BIND(NasJaxDepthwiseInputGrad, InputGrad)
NAS_JAX_DW_BIND(NasJaxDepthwiseWeightGrad, WeightGrad)
