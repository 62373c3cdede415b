// The sample plugin: two small tensor blocks registered through TESSERA_PLUGIN. The engine tests load it;
// it is also the template for a plugin of your own (copy this folder, rename the ids and the target).
#include <tessera/plugin_abi.h>
#include <tessera/registry.h>

namespace sample {

using tessera::BlockSpec;
using tessera::BlockState;
using tessera::Components;
using tessera::InputParam;
using tessera::Kind;
using tessera::OutputParam;
using tessera::Value;
using tessera::ValueMap;

/// y = a * x + b, elementwise; a and b are construction params (recipe `params:`).
class AffineStep final : public tessera::LeafBlock {
 public:
  explicit AffineStep(const ValueMap& params)
      : a_(params.at("a").to_float("a")), b_(params.at("b").to_float("b")) {}

  BlockSpec spec() const override {
    return BlockSpec("sample.affine", "y = a * x + b, elementwise")
        .input(InputParam("x", Kind::Tensor, "input tensor", /*required=*/true))
        .output(OutputParam("y", Kind::Tensor, "a * x + b, same shape and dtype as x"));
  }

  void run(Components&, BlockState& state) const override { state.set("y", state.tensor("x") * a_ + b_); }

 private:
  double a_, b_;
};

/// Clamps x into [min, max] and writes it back under the same name.
class ClampTensorStep final : public tessera::LeafBlock {
 public:
  explicit ClampTensorStep(const ValueMap& params)
      : min_(params.at("min").to_float("min")), max_(params.at("max").to_float("max")) {
    // Reported by Registry::create_block as "rejected its params", at recipe validation time.
    if (min_ > max_) throw std::invalid_argument("min (" + std::to_string(min_) + ") is above max (" +
                                                 std::to_string(max_) + ")");
  }

  BlockSpec spec() const override {
    return BlockSpec("sample.clamp_tensor", "Clamp x into [min, max], in place")
        .input(InputParam("x", Kind::Tensor, "tensor to clamp; replaced by the clamped tensor", /*required=*/true));
  }

  void run(Components&, BlockState& state) const override { state.set("x", state.tensor("x").clamp(min_, max_)); }

 private:
  double min_, max_;
};

/// latents = factor * latents: a block that slots into the standard latent pipelines.
class ScaleLatentsStep final : public tessera::LeafBlock {
 public:
  explicit ScaleLatentsStep(const ValueMap& params) : factor_(params.at("factor").to_float("factor")) {}
  BlockSpec spec() const override {
    return BlockSpec("sample.scale_latents", "latents = factor * latents")
        .input(InputParam("latents", Kind::Tensor, "latents [B, C, h, w]", /*required=*/true))
        .output(OutputParam("latents", Kind::Tensor, "scaled latents"));
  }
  void run(Components&, BlockState& state) const override {
    state.set("latents", state.tensor("latents") * factor_);
  }

 private:
  double factor_;
};

void register_sample_blocks(tessera::Registry& registry) {
  tessera::add_block_type<ScaleLatentsStep>(registry, "sample.scale_latents", "latents = factor * latents",
                                            {InputParam("factor", Kind::Float, "scale").with_default(Value(1.0))});
  tessera::add_block_type<AffineStep>(registry, "sample.affine", "y = a * x + b, elementwise",
                                      {InputParam("a", Kind::Float, "scale").with_default(Value(1.0)),
                                       InputParam("b", Kind::Float, "offset").with_default(Value(0.0))});
  tessera::add_block_type<ClampTensorStep>(registry, "sample.clamp_tensor", "Clamp x into [min, max], in place",
                                           {InputParam("min", Kind::Float, "lower bound").with_default(Value(0.0)),
                                            InputParam("max", Kind::Float, "upper bound").with_default(Value(1.0))});
}

}  // namespace sample

TESSERA_PLUGIN("sample", sample::register_sample_blocks)
