#pragma once
/// Small helpers every benchmark program shares.
#include <sys/resource.h>

namespace tessera::bench {

/// Peak resident set size of this process so far, in MB (getrusage's ru_maxrss is in KiB on Linux).
inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace tessera::bench
