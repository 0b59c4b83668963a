// Shared by the nas_jax CPU kernels: the FFI headers, a parallel loop on XLA's
// intra-op thread pool, the dispatch of channel counts to compile-time
// constants, the ordered sum of per-chunk partial results, and the checked
// pick of one variadic argument.
#ifndef NAS_JAX_KERNELS_COMMON_H_
#define NAS_JAX_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace nas_jax {

// Runs body(item) for item in [0, items) on the calling thread and up to
// (threads - 1) pool threads.  Items are claimed from a shared counter, so the
// caller never waits for a task that has not started: it waits only for items
// already being computed.  Which thread runs an item does not change a result:
// every item writes its own output.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t items, const Body& body) {
  int64_t workers = std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), items);
  if (workers <= 1) {
    for (int64_t i = 0; i < items; ++i) body(i);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [](State& st, int64_t items, const Body& body) {
    for (int64_t i; (i = st.next.fetch_add(1)) < items;) {
      body(i);
      st.done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < workers; ++t) {
    // A task holds `state` (shared ownership). One that starts after this
    // call returned finds no item left and touches nothing else; `body` is
    // only read while an item is unfinished, so the caller is still here.
    pool.Schedule([state, items, &body, work]() { work(*state, items, body); });
  }
  work(*state, items, body);
  while (state->done.load(std::memory_order_acquire) < items) std::this_thread::yield();
}

// Calls fn.template operator()<kC>() with kC = c for the common channel
// counts (so inner loops over channels unroll into whole AVX registers) and
// kC = 0 (c read at run time) otherwise.
template <typename Fn>
void DispatchWidth(int64_t c, Fn&& fn) {
  switch (c) {
    case 8: fn.template operator()<8>(); break;
    case 16: fn.template operator()<16>(); break;
    case 32: fn.template operator()<32>(); break;
    case 48: fn.template operator()<48>(); break;
    case 64: fn.template operator()<64>(); break;
    default: fn.template operator()<0>(); break;
  }
}

// A row of kC accumulators on the stack (registers, once unrolled), or of c
// on the heap when kC is 0.
template <int kC>
class AccumulatorRow {
 public:
  explicit AccumulatorRow(int64_t c) : heap_(kC > 0 ? 0 : c) {}
  float* data() { return kC > 0 ? stack_ : heap_.data(); }

 private:
  float stack_[kC > 0 ? kC : 1];
  std::vector<float> heap_;
};

// out[e] = sum over p in [0, parts) of partials[p * size + e], in p order:
// the same bits whatever thread computed which partial.
inline void SumPartialsInOrder(const std::vector<float>& partials, int64_t parts, int64_t size, float* out) {
  std::memset(out, 0, sizeof(float) * size);
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t e = 0; e < size; ++e) out[e] += partials[p * size + e];
}

// The float32 buffer args[i] of a variadic argument list, with i checked: the
// input that a traced index picks among a supernet cell's states.
inline ffi::ErrorOr<ffi::Buffer<ffi::F32>> PickArg(int64_t i, const ffi::RemainingArgs& args) {
  if (i < 0 || i >= static_cast<int64_t>(args.size()))
    return ffi::Unexpected(ffi::Error::InvalidArgument("index out of range of the candidate inputs"));
  return args.get<ffi::Buffer<ffi::F32>>(i);
}

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_COMMON_H_
