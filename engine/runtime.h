#pragma once
/// Process-wide runtime settings for embedders and the CLI.

namespace tessera {

/// Sets LibTorch's intra-op threads: `n` > 0 as given, otherwise the number of cores (LibTorch
/// would otherwise start with fewer on some builds). Returns the number now in use.
int configure_threads(int n = 0);

}  // namespace tessera
