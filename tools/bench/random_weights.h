#pragma once
/// Full-size models with random weights, built without ever holding a float32 copy of the whole model: the module
/// is constructed inside SkipRandomInit (its parameters are allocated but their pages are not touched), then each
/// submodule in turn draws LibTorch's default initialisation (reset_parameters of Linear, Conv and Embedding; the
/// deterministic fills — norms' ones and zeros, sin-cos tables — already ran in the constructor) and has its own
/// tensors converted to the wanted dtype. Peak memory is the model in that dtype plus one layer in float32, which is
/// what lets a 2-core, 24 GB machine write a bf16 T5-XXL (4.8 B parameters) or build the SD3.5-medium transformer in
/// bfloat16 without a 9 GB float32 detour.
///
///   auto t5 = build_random<T5EncoderModelImpl>(at::kBFloat16, config);
///   materialise(*other, at::kBFloat16, [&](const std::string& key, at::Tensor& t) { shard[key] = t; });
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/loading/skip_init.h"

namespace tessera::bench {

/// One tensor of a module as a checkpoint holds it: its key and its bytes in `dtype`.
struct TensorPlan {
  std::string key;
  int64_t bytes = 0;
};

namespace detail {

inline std::string join_key(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

/// transformers does not persist CLIP's position_ids buffer.
inline bool persisted(const std::string& name) { return name != "position_ids"; }

/// Draws the default initialisation of the LibTorch layers that initialise randomly; false for other modules.
inline bool reset_random(torch::nn::Module& m) {
  if (auto* p = dynamic_cast<torch::nn::LinearImpl*>(&m)) return p->reset_parameters(), true;
  if (auto* p = dynamic_cast<torch::nn::Conv1dImpl*>(&m)) return p->reset_parameters(), true;
  if (auto* p = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) return p->reset_parameters(), true;
  if (auto* p = dynamic_cast<torch::nn::Conv3dImpl*>(&m)) return p->reset_parameters(), true;
  if (auto* p = dynamic_cast<torch::nn::ConvTranspose2dImpl*>(&m)) return p->reset_parameters(), true;
  if (auto* p = dynamic_cast<torch::nn::EmbeddingImpl*>(&m)) return p->reset_parameters(), true;
  return false;
}

template <typename Fn>
void for_each_own_tensor(torch::nn::Module& m, Fn fn) {
  for (auto& p : m.named_parameters(/*recurse=*/false)) fn(p.key(), p.value());
  for (auto& b : m.named_buffers(/*recurse=*/false))
    if (persisted(b.key())) fn(b.key(), b.value());
}

}  // namespace detail

/// The checkpoint tensors of `module` in the order materialise() delivers them, with their sizes in `dtype`
/// (floating tensors) or their own dtype. Reads shapes only.
inline std::vector<TensorPlan> plan_tensors(torch::nn::Module& module, at::ScalarType dtype) {
  std::vector<TensorPlan> plan;
  for (const auto& item : module.named_modules()) {
    detail::for_each_own_tensor(*item.value(), [&](const std::string& name, const at::Tensor& t) {
      const auto type = t.is_floating_point() ? dtype : t.scalar_type();
      plan.push_back({detail::join_key(item.key(), name), t.numel() * static_cast<int64_t>(c10::elementSize(type))});
    });
  }
  return plan;
}

/// Initialises `module` (built inside SkipRandomInit) submodule by submodule, converts each floating parameter and
/// persistent buffer to `dtype` in place (the module keeps them) and hands each to `sink(key, tensor)` in
/// plan_tensors order. A floating "weight" that is all zeros and belongs to no randomly initialised layer means a
/// module initialises itself in a way this helper does not reproduce: it is named on stderr.
inline void materialise(torch::nn::Module& module, at::ScalarType dtype,
                        const std::function<void(const std::string&, at::Tensor&)>& sink = {}) {
  torch::NoGradGuard no_grad;
  for (const auto& item : module.named_modules()) {
    torch::nn::Module& m = *item.value();
    const bool random = detail::reset_random(m);
    detail::for_each_own_tensor(m, [&](const std::string& name, at::Tensor& t) {
      const std::string key = detail::join_key(item.key(), name);
      if (!random && t.is_floating_point() && name == "weight" && t.numel() > 0 && !t.ne(0).any().item<bool>())
        std::fprintf(stderr, "warning: %s is all zeros after construction (not a randomly initialised layer)\n",
                     key.c_str());
      if (t.is_floating_point() && t.scalar_type() != dtype) t.set_data(t.to(dtype));
      if (sink) sink(key, t);
    });
  }
}

/// Builds Impl(args...) with random weights in `dtype` (see the file comment), in eval mode.
template <typename Impl, typename... Args>
std::shared_ptr<Impl> build_random(at::ScalarType dtype, Args&&... args) {
  std::shared_ptr<Impl> model;
  {
    SkipRandomInit skip;  // materialise draws the random values, layer by layer
    model = std::make_shared<Impl>(std::forward<Args>(args)...);
  }
  materialise(*model, dtype);
  model->eval();
  return model;
}

/// Parameters (not buffers) of a module.
inline int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace tessera::bench
