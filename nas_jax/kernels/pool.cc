// The nodes of a weight-sharing supernet cell, forward, for XLA:CPU through the
// XLA FFI (NodeSum below): each node is the sum of its two edges, where an edge
// is an op's output with its last batch norm still to apply, or a 3x3 average
// pool (padded cells not counted, as ops.avg_pool), 3x3 max pool (padded cells
// ignored, as ops.max_pool) or copy of the state a traced index picks. In XLA
// a pool edge is a dynamic slice (a full copy of the input), a padded copy for
// the window, the pool's output and the add that reads it again; here the
// pools read the chosen state in place and each node row is summed in cache.
// Forward only: nas_jax/kernels/pick.py differentiates its pure-JAX reference.
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

// One output row (sample n, output row ho) of a window pool (kind 0 average,
// 1 max); the window of (ho, wo) covers input rows ho*s - pad + i and columns
// wo*s - pad + j.
template <int kC>
void PoolRow(const PoolGeometry& g, const float* __restrict x, float* __restrict yr, int64_t n, int64_t ho) {
  const int64_t C = kC > 0 ? kC : g.c;
  const int64_t i0 = std::max<int64_t>(0, ho * g.stride - g.pad);
  const int64_t i1 = std::min<int64_t>(g.h, ho * g.stride - g.pad + g.k);
  const float* sample = x + n * g.h * g.w * C;
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

// A node of a supernet cell in one pass: node = edge_0 + edge_1, where edge e is
//   kind 0:       y_e * a_e + b_e (a separable conv or factorized reduce, its last
//                 batch norm applied here);
//   kind 1, 2, 3: the 3x3 average pool, 3x3 max pool or copy (identity) of
//                 states[idx_e], at the stride that maps its size to the node's.
// The pools and copies are never written out: each node row sums its edges in
// cache. y_e of a pool edge is a placeholder the kernel does not read.
struct Edge {
  int64_t kind;
  const float *y, *a, *b, *x;
  PoolGeometry g;
};

ffi::Error NodeSum(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> kinds, ffi::Buffer<ffi::S32> idxs,
                   ffi::Buffer<ffi::F32> y0, ffi::Buffer<ffi::F32> a0, ffi::Buffer<ffi::F32> b0,
                   ffi::Buffer<ffi::F32> y1, ffi::Buffer<ffi::F32> a1, ffi::Buffer<ffi::F32> b1,
                   ffi::RemainingArgs states, ffi::ResultBuffer<ffi::F32> node) {
  auto nd = node->dimensions();
  if (kinds.element_count() != 2 || idxs.element_count() != 2 || nd.size() != 4)
    return ffi::Error::InvalidArgument("node sum: need kinds [2], idxs [2] and node [N, H, W, C]");
  const int64_t n = nd[0], ho = nd[1], wo = nd[2], c = nd[3];
  Edge edges[2];
  const ffi::Buffer<ffi::F32>* ys[2] = {&y0, &y1};
  const ffi::Buffer<ffi::F32>* as[2] = {&a0, &a1};
  const ffi::Buffer<ffi::F32>* bs[2] = {&b0, &b1};
  for (int e = 0; e < 2; ++e) {
    Edge& ed = edges[e];
    ed.kind = kinds.typed_data()[e];
    if (ed.kind < 0 || ed.kind > 3) return ffi::Error::InvalidArgument("node sum: kind must be 0..3");
    if (ys[e]->element_count() != n * ho * wo * c || as[e]->element_count() != c || bs[e]->element_count() != c)
      return ffi::Error::InvalidArgument("node sum: y must have the node's shape, a and b C elements");
    ed.y = ys[e]->typed_data(); ed.a = as[e]->typed_data(); ed.b = bs[e]->typed_data(); ed.x = nullptr;
    if (ed.kind == 0) continue;
    auto x = nas_jax::PickArg(idxs.typed_data()[e], states);
    if (x.has_error()) return x.error();
    auto xd = x->dimensions();
    if (xd.size() != 4 || xd[0] != n || xd[3] != c) return ffi::Error::InvalidArgument("node sum: bad state shape");
    const int64_t stride = (xd[1] + ho - 1) / ho;
    if ((xd[1] - 1) / stride + 1 != ho || (xd[2] - 1) / stride + 1 != wo || (ed.kind == 3 && stride != 1))
      return ffi::Error::InvalidArgument("node sum: a state's size does not map to the node's");
    const int64_t k = ed.kind == 3 ? 1 : 3;
    ed.g = PoolGeometry{n, xd[1], xd[2], c, ho, wo, k, stride, (k - 1) / 2, ed.kind == 2 ? 1 : 0};
    ed.x = x->typed_data();
  }
  void (*row_fn)(const PoolGeometry&, const float*, float*, int64_t, int64_t) = nullptr;
  nas_jax::DispatchWidth(c, [&]<int kC>() { row_fn = &PoolRow<kC>; });
  float* out = node->typed_data();
  const int64_t rows = n * ho, row = wo * c;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, rows));
  ParallelFor(pool, chunks, [&](int64_t ch) {
    std::vector<float> tmp(row);
    for (int64_t r = ch * rows / chunks; r < (ch + 1) * rows / chunks; ++r) {
      float* o = out + r * row;
      for (int e = 0; e < 2; ++e) {
        const Edge& ed = edges[e];
        const float* src;  // this edge's row, before its affine map (kind 0) or as is
        if (ed.kind == 0) {
          src = ed.y + r * row;
        } else if (ed.kind == 3) {
          src = ed.x + r * row;
        } else {
          row_fn(ed.g, ed.x, tmp.data(), r / ho, r % ho);
          src = tmp.data();
        }
        const bool affine = ed.kind == 0;
        for (int64_t col = 0; col < wo; ++col) {
          const float* s = src + col * c;
          float* d = o + col * c;
          int64_t ci = 0;
#ifdef NAS_JAX_AVX2
          for (; ci + 8 <= c; ci += 8) {
            __m256 v = _mm256_loadu_ps(s + ci);
            if (affine) v = _mm256_fmadd_ps(v, _mm256_loadu_ps(ed.a + ci), _mm256_loadu_ps(ed.b + ci));
            _mm256_storeu_ps(d + ci, e == 0 ? v : _mm256_add_ps(_mm256_loadu_ps(d + ci), v));
          }
#endif
          for (; ci < c; ++ci) {
            const float v = affine ? s[ci] * ed.a[ci] + ed.b[ci] : s[ci];
            d[ci] = e == 0 ? v : d[ci] + v;
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

// An output buffer left as it is: the y of a pool edge, which NodeSum does not read.
ffi::Error Placeholder(ffi::ResultBuffer<ffi::F32> y) { return ffi::Error::Success(); }

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxPoolNodeSum, NodeSum,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxPoolPlaceholder, Placeholder, ffi::Ffi::Bind().Ret<ffi::Buffer<ffi::F32>>());
