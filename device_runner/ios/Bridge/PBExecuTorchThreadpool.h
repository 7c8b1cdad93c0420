// The part of ExecuTorch's threadpool API (extension/threadpool/threadpool.h) the runner calls.
// The prebuilt xcframeworks ship the threadpool library (libextension_threadpool.a, in the
// `threadpool` target that backend_xnnpack depends on) but not its header, so when the header is
// not on the path the two member functions and the accessor are declared here with the
// signatures of that header in the ExecuTorch release the app links (checked against 1.5's).
#pragma once

#include <cstddef>
#include <cstdint>

#if __has_include(<executorch/extension/threadpool/threadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#define PARBENCH_ET_THREADPOOL_HEADER 1
#else
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  std::size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif
