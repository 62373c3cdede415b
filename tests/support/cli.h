#pragma once
// Helpers for tests that run the built tessera binary (tests/tools): run it, find source files and the tiny
// models, and a temporary folder removed at the end of the test. Header-only: TESSERA_CLI is defined for
// test_tools only.
#include <catch2/catch.hpp>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace tessera::test {

struct CliResult {
  int code;            ///< the exit status (-1 when killed by a signal)
  std::string output;  ///< stdout and stderr
};

/// Runs `tessera ARGS` through the shell (quote arguments with spaces).
inline CliResult cli(const std::string& args) {
  std::string cmd = std::string(TESSERA_CLI) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// A path in the source tree.
inline std::string src(const std::string& rel) { return (std::filesystem::path(TESSERA_SOURCE_DIR) / rel).string(); }
/// A path under the tiny parity models (tests/fixtures/parity/models).
inline std::string models(const std::string& rel) { return src("tests/fixtures/parity/models/" + rel); }

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A fresh folder under the system temp dir, removed with everything in it when the object goes.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "tessera-test") {
    path = std::filesystem::temp_directory_path() /
           (prefix + "-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

/// A `tessera run` that must fail: its arguments, its exit code and parts of its message.
struct FailingRun {
  std::string args;
  int code;
  std::vector<std::string> message;
};

/// Runs `tessera run ARGS --out OUT` for each and checks the exit code, every message part, and that `out` was
/// not written (no half-written output).
inline void check_failing_runs(const std::vector<FailingRun>& runs, const std::string& out) {
  for (const auto& run : runs) {
    auto r = cli("run " + run.args + " --out " + out);
    INFO(run.args << "\n" << r.output);
    CHECK(r.code == run.code);
    for (const auto& m : run.message) CHECK_THAT(r.output, Catch::Matchers::Contains(m));
    CHECK_FALSE(std::filesystem::exists(out));
  }
}

}  // namespace tessera::test
