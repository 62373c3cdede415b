#pragma once
/// Building a model whose weights are about to be loaded without filling its parameters with random values first.
///
/// LibTorch's modules initialise their parameters in the constructor (kaiming/normal fills through `uniform_` and
/// `normal_`, drawn serially from the CPU generator): for the full-size SD1.5 UNet that is 3.8 s of a 5.2 s load,
/// all of it overwritten by the checkpoint. Inside a SkipRandomInit scope the random fills are no-ops (the
/// parameters keep their uninitialised memory); the strict state-dict loader then guarantees every parameter is
/// overwritten (a missing tensor is a ModelLoadError), so nothing uninitialised survives. Deterministic fills
/// (`zeros_`, `ones_`, `arange` buffers) still run.
///
///   { SkipRandomInit skip; model = std::make_shared<UNet2DConditionModelImpl>(config); }
///   load_state_dict(*model, files, dtype);
///
/// Mechanism: a dispatch key reserved by c10 for out-of-tree modes (TESTING_ONLY_GenericMode) is included in the
/// thread's dispatch set for the scope; Tessera registers a fallthrough for every operator on it, and no-op kernels
/// for `uniform_` and `normal_`. Only the constructing thread is affected.
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace tessera {

class SkipRandomInit {
 public:
  SkipRandomInit();
  SkipRandomInit(const SkipRandomInit&) = delete;
  SkipRandomInit& operator=(const SkipRandomInit&) = delete;

 private:
  c10::impl::IncludeDispatchKeyGuard guard_;
};

}  // namespace tessera
