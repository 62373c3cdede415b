#include "models/loading/skip_init.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace tessera {

namespace {
at::Tensor& skip_uniform(at::Tensor& self, double, double, c10::optional<at::Generator>) { return self; }
at::Tensor& skip_normal(at::Tensor& self, double, double, c10::optional<at::Generator>) { return self; }
}  // namespace

// Operator registrations are static by LibTorch's design (TORCH_LIBRARY_IMPL); they only take effect inside a
// SkipRandomInit scope, which includes the key.
TORCH_LIBRARY_IMPL(_, TESTING_ONLY_GenericMode, m) { m.fallback(torch::CppFunction::makeFallthrough()); }
TORCH_LIBRARY_IMPL(aten, TESTING_ONLY_GenericMode, m) {
  m.impl("uniform_", TORCH_FN(skip_uniform));
  m.impl("normal_", TORCH_FN(skip_normal));
}

SkipRandomInit::SkipRandomInit() : guard_(c10::DispatchKey::TESTING_ONLY_GenericMode) {}

}  // namespace tessera
