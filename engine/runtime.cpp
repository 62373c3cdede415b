#include "tessera/runtime.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace tessera {

int configure_threads(int n) {
  int threads = n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  f.amx_bf16 = f.avx512_bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
#endif
  return f;
}

double Bf16Probe::speedup() const {
  double fp32 = 0, bf16 = 0;
  for (const auto& op : ops) {
    fp32 += op.fp32_ms;
    bf16 += op.bf16_ms;
  }
  return bf16 > 0 ? fp32 / bf16 : 0;
}

Bf16Probe probe_bf16_speed() {
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(1234);
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)); };
  struct Case {
    std::string name;
    std::vector<at::Tensor> fp32, bf16;
    std::function<at::Tensor(const std::vector<at::Tensor>&)> run;
  };
  auto conv = [](const std::vector<at::Tensor>& t) { return at::conv2d(t[0], t[1], t[2], {1, 1}, {1, 1}); };
  std::vector<Case> cases;
  cases.push_back({"UNet conv 3x3 320ch 32x32", {randn({2, 320, 32, 32}), randn({320, 320, 3, 3}), randn({320})}, {},
                   conv});
  cases.push_back({"VAE conv 3x3 128ch 96x96", {randn({1, 128, 96, 96}), randn({128, 128, 3, 3}), randn({128})}, {},
                   conv});
  cases.push_back({"linear 2048x320->1280", {randn({2048, 320}), randn({1280, 320}), randn({1280})}, {},
                   [](const std::vector<at::Tensor>& t) { return at::linear(t[0], t[1], t[2]); }});
  for (auto& c : cases)
    for (const auto& t : c.fp32) c.bf16.push_back(t.to(at::kBFloat16));
  auto time_ms = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  Bf16Probe probe;
  for (auto& c : cases) {
    Bf16Probe::Op op{c.name, 1e30, 1e30};
    for (int rep = 0; rep < 4; ++rep) {  // the first of each is a warm-up (oneDNN creates its kernels)
      const double f = time_ms([&] { c.run(c.fp32); });
      const double b = time_ms([&] { c.run(c.bf16); });
      if (rep == 0) continue;
      op.fp32_ms = std::min(op.fp32_ms, f);
      op.bf16_ms = std::min(op.bf16_ms, b);
    }
    probe.ops.push_back(op);
  }
  return probe;
}

DtypeChoice auto_dtype(const CpuFeatures& cpu, const std::function<Bf16Probe()>& probe) {
  if (cpu.amx_bf16) return {"bf16", "dtype auto: bf16 (this CPU has AMX-BF16, where bf16 runs several times faster)"};
  if (!cpu.avx512_bf16)
    return {"fp32", "dtype auto: fp32 (no bf16 instructions: bf16 matmuls would run a reference kernel)"};
  // AVX512-BF16 without AMX: some CPUs run bf16 faster, some slower. Measure.
  const Bf16Probe p = probe();
  char buf[64];
  std::string detail;
  bool any_slower = false;
  for (const auto& op : p.ops) {
    std::snprintf(buf, sizeof buf, "%.2fx", op.speedup());
    detail += (detail.empty() ? "" : ", ") + op.name + " " + buf;
    any_slower = any_slower || op.speedup() < 1.0;
  }
  std::snprintf(buf, sizeof buf, "%.2fx", p.speedup());
  const std::string measured = "bf16 measured " + std::string(buf) + " as fast as fp32 on " +
                               std::to_string(at::get_num_threads()) + (at::get_num_threads() == 1 ? " thread (" : " threads (") + detail + ")";
  std::snprintf(buf, sizeof buf, "%.2f", kBf16MinSpeedup);
  if (p.speedup() >= kBf16MinSpeedup && !any_slower) return {"bf16", "dtype auto: bf16 (AVX512-BF16: " + measured + ")"};
  return {"fp32", "dtype auto: fp32 (AVX512-BF16 without AMX: " + measured + "; bf16 needs " + buf +
                      "x and no op slower)"};
}

const DtypeChoice& auto_dtype() {
  static const DtypeChoice choice = auto_dtype(cpu_features());
  return choice;
}

std::string preferred_blas_core(const std::string& current, const CpuFeatures& cpu) {
  // OpenBLAS's generic fallbacks: what dynamic-arch builds run on CPUs their cpuid tables do not know.
  if (current != "Prescott") return "";
  if (cpu.avx512_bf16) return "Cooperlake";
  if (cpu.avx512) return "SkylakeX";
  if (cpu.avx2_fma) return "Haswell";
  return "";
}

namespace {

struct OpenBlasEntryPoints {
  char* (*corename)() = nullptr;
  void (*dynamic_init)() = nullptr;
  void (*dynamic_quit)() = nullptr;
  bool ok() const { return corename && dynamic_init && dynamic_quit; }
};

OpenBlasEntryPoints openblas_entry_points() {
  OpenBlasEntryPoints e;
  e.corename = reinterpret_cast<char* (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_corename"));
  e.dynamic_init = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  e.dynamic_quit = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  return e;
}

// OpenBLAS re-selects its core from OPENBLAS_CORETYPE.
void reselect(const OpenBlasEntryPoints& e, const std::string& core) {
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  e.dynamic_quit();
  e.dynamic_init();
}

}  // namespace

std::string blas_core() {
  const OpenBlasEntryPoints e = openblas_entry_points();
  return e.ok() ? std::string(e.corename()) : std::string();
}

std::string set_blas_core(const std::string& core) {
  const OpenBlasEntryPoints e = openblas_entry_points();
  if (!e.ok()) return "";
  reselect(e, core);
  return e.corename();
}

namespace {

// A small sgemm (through LibTorch, i.e. the BLAS) against a product computed without BLAS.
bool sgemm_agrees() {
  at::NoGradGuard no_grad;
  at::Tensor a = at::rand({67, 129}, at::kFloat) - 0.5, b = at::rand({129, 71}, at::kFloat) - 0.5;
  at::Tensor got = at::mm(a, b);
  at::Tensor want = (a.to(at::kDouble).unsqueeze(2) * b.to(at::kDouble).unsqueeze(0)).sum(1);  // [67, 71]
  return at::allclose(got.to(at::kDouble), want, 1e-4, 1e-5);
}

BlasSelection select_once() {
  BlasSelection s;
  const OpenBlasEntryPoints e = openblas_entry_points();
  if (!e.ok()) {
    s.reason = "LibTorch's BLAS is not a dynamic-arch OpenBLAS: left as is";
    return s;
  }
  s.library = "OpenBLAS";
  s.before = s.after = e.corename();
  if (const char* user = std::getenv("OPENBLAS_CORETYPE")) {
    s.reason = std::string("OPENBLAS_CORETYPE=") + user + " is set: left to the user's choice";
    return s;
  }
  if (const char* keep = std::getenv("TESSERA_BLAS_CORE"); keep && std::string(keep) == "keep") {
    s.reason = "TESSERA_BLAS_CORE=keep: left as is";
    return s;
  }
  const std::string want = preferred_blas_core(s.before, cpu_features());
  if (want.empty()) {
    s.reason = "OpenBLAS core " + s.before + " kept (recognised CPU, or nothing faster runs here)";
    return s;
  }
  reselect(e, want);
  s.after = e.corename();
  if (!sgemm_agrees()) {
    reselect(e, s.before);
    unsetenv("OPENBLAS_CORETYPE");
    s.after = e.corename();
    s.reason = "OpenBLAS core " + want + " gave a wrong sgemm: back to " + s.after;
    return s;
  }
  s.reason = "OpenBLAS ran its generic " + s.before + " kernels on this CPU: selected " + s.after +
             " (OPENBLAS_CORETYPE=" + want + "; set OPENBLAS_CORETYPE yourself to choose)";
  return s;
}

}  // namespace

BlasSelection select_blas_core() {
  static std::once_flag once;
  static BlasSelection result;
  std::call_once(once, [] { result = select_once(); });
  return result;
}

}  // namespace tessera
