#include "engine/runtime.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

namespace tessera {

int configure_threads(int n) {
  int threads = n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

}  // namespace tessera
