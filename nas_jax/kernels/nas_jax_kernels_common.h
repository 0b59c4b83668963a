// Shared by the nas_jax CPU kernels (depthwise.cc, pointwise.cc): the FFI
// headers and a parallel loop on XLA's intra-op thread pool.
#ifndef NAS_JAX_KERNELS_COMMON_H_
#define NAS_JAX_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

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

}  // namespace nas_jax

#endif  // NAS_JAX_KERNELS_COMMON_H_
