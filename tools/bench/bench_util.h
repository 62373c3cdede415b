#pragma once
/// Small helpers every benchmark program shares.
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>

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

}  // namespace tessera::bench
