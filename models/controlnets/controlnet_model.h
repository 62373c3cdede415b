#pragma once
/// diffusers' ControlNetModel (models/controlnets/controlnet.py): the UNet's encoder half (conv_in, time and SDXL
/// addition embeddings, down blocks, mid block) built from the ControlNet's own config.json, plus the conditioning
/// embedding of the control image and one zero-initialised 1x1 conv per skip connection and for the mid block.
/// Its outputs are the residuals UNet2DConditionInputs takes.
///
///   auto cn = ControlNetModelImpl::from_pretrained("control_v11p_sd15_canny");
///   ControlNetOutput r = cn->forward(latents, t, prompt_embeds, control_image, {}, /*conditioning_scale=*/0.7);
///   UNet2DConditionInputs in;
///   in.down_block_additional_residuals = r.down_block_res_samples;
///   in.mid_block_additional_residual = r.mid_block_res_sample;
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/components.h"
#include "models/common/embeddings.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera {

class Registry;
class ModelConfig;

/// ControlNetModel's config: the UNet fields it shares (read by UNet2DConditionModelConfig's reader; there are no
/// up blocks) and its own.
struct ControlNetModelConfig {
  UNet2DConditionModelConfig unet;
  int64_t conditioning_channels = 3;
  std::vector<int64_t> conditioning_embedding_out_channels = {16, 32, 96, 256};
  std::string controlnet_conditioning_channel_order = "rgb";  ///< "rgb" or "bgr" (the control image is flipped)
  bool global_pool_conditions = false;

  static ControlNetModelConfig from_config(ModelConfig& config);
};

/// The residuals: one per skip connection of the down blocks (conv_in's output first), and the mid block's.
struct ControlNetOutput {
  std::vector<at::Tensor> down_block_res_samples;
  at::Tensor mid_block_res_sample;
};

/// diffusers' ControlNetConditioningEmbedding: conv_in 3x3 + SiLU, per stage a 3x3 conv and a stride-2 3x3 conv
/// with SiLU, conv_out 3x3 (zero-initialised in training) to block_out_channels[0].
class ControlNetConditioningEmbeddingImpl : public torch::nn::Module {
 public:
  ControlNetConditioningEmbeddingImpl(int64_t conditioning_embedding_channels, int64_t conditioning_channels,
                                      const std::vector<int64_t>& block_out_channels);
  at::Tensor forward(const at::Tensor& conditioning);
  torch::nn::Conv2d conv_in{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(ControlNetConditioningEmbedding);

class ControlNetModelImpl : public torch::nn::Module, public Component {
 public:
  explicit ControlNetModelImpl(ControlNetModelConfig config);

  /// Builds the model from `folder/subfolder/config.json` and loads its weights strictly.
  static std::shared_ptr<ControlNetModelImpl> from_pretrained(const std::string& folder, const std::string& subfolder = {},
                                                              at::ScalarType dtype = at::kFloat);

  /// sample [B, in_channels, h, w]; timestep a scalar or [B]; encoder_hidden_states [B, M, cross];
  /// controlnet_cond [B, conditioning_channels, h·f, w·f] (f = the conditioning embedding's downsampling, the VAE
  /// factor) in [0, 1]. `inputs` carries SDXL's text_embeds / time_ids. Every residual is multiplied by
  /// conditioning_scale; in guess mode by torch.logspace(-1, 0, n + 1)[k] · conditioning_scale instead (unless
  /// global_pool_conditions). global_pool_conditions: residuals are spatial means. Outputs are float32.
  ControlNetOutput forward(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& encoder_hidden_states,
                           const at::Tensor& controlnet_cond, const UNet2DConditionInputs& inputs = {},
                           double conditioning_scale = 1.0, bool guess_mode = false);

  /// The conditioning embedding alone (for tests and parity: diffusers' cond_embedding).
  at::Tensor cond_embedding(const at::Tensor& controlnet_cond);

  at::ScalarType dtype() const { return conv_in->weight.scalar_type(); }
  std::string type() const override { return "ControlNetModel"; }
  size_t nbytes() const override;

  ControlNetModelConfig config;
  torch::nn::Conv2d conv_in{nullptr};
  Timesteps time_proj{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  Timesteps add_time_proj{nullptr};
  TimestepEmbedding add_embedding{nullptr};
  ControlNetConditioningEmbedding controlnet_cond_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  torch::nn::ModuleList controlnet_down_blocks{nullptr};
  std::shared_ptr<torch::nn::Module> mid_block;
  torch::nn::Conv2d controlnet_mid_block{nullptr};
};
TORCH_MODULE(ControlNetModel);

/// Registers the "ControlNetModel" component type.
void register_controlnet_model(Registry& registry);

}  // namespace tessera
