#pragma once
/// Small helpers every benchmark program shares.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <vector>

namespace tessera::bench {

/// Peak resident set size of this process so far, in MB (getrusage's ru_maxrss is in KiB on Linux).
inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// Resident set size of this process now, in MB (/proc/self/statm; 0 where it cannot be read).
inline double current_rss_mb() {
  std::ifstream f("/proc/self/statm");
  long long size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0.0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

/// Wall time of one call of `fn`, in ms.
inline double time_ms(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

/// The median of sorted values as Python's statistics.median (the diffusers scripts' figure): the mean of the two
/// middle values for an even count.
inline double median_sorted(const std::vector<double>& sorted) {
  const size_t n = sorted.size();
  if (n == 0) return 0.0;
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

/// The median wall time of `runs` calls of `fn` after one warm-up call, in ms.
inline double median_ms(int runs, const std::function<void()>& fn) {
  fn();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) ms.push_back(time_ms(fn));
  std::sort(ms.begin(), ms.end());
  return median_sorted(ms);
}

}  // namespace tessera::bench
