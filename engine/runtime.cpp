#include "engine/runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
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

DtypeChoice auto_dtype(const CpuFeatures& cpu) {
  if (cpu.amx_bf16) return {"bf16", "dtype auto: bf16 (this CPU has AMX-BF16, where bf16 runs several times faster)"};
  if (cpu.avx512_bf16)
    return {"fp32", "dtype auto: fp32 (AVX512-BF16 without AMX: bf16 measured no faster for the UNet, 3x slower for "
                    "the VAE)"};
  return {"fp32", "dtype auto: fp32 (no bf16 instructions: bf16 matmuls would run a reference kernel)"};
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
