#pragma once
/// diffusers' UNet2DConditionModel (unets/unet_2d_condition.py) for Stable Diffusion 1.x, 2.x, SDXL and LCM
/// checkpoints: config.json with diffusers' field names and defaults, submodules under the state-dict keys
/// (conv_in, time_embedding.linear_1, add_embedding, down_blocks.N…, mid_block, up_blocks.N…, conv_norm_out,
/// conv_out), strict loading from a diffusers folder, and guiders' layer hooks applied per batch slice.
///
///   auto unet = UNet2DConditionModelImpl::from_pretrained("tiny-sd", "unet");
///   at::Tensor eps = unet->forward(latents, at::scalar_tensor(500), prompt_embeds);  // [B, 4, h, w]
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/components.h"
#include "guiders/layer_hooks.h"
#include "models/common/embeddings.h"
#include "models/unet/unet_2d_blocks.h"

namespace tessera {

class Registry;
class ModelConfig;
class AttentionProcessor;

/// The UNet2DConditionModel config (diffusers' field names and defaults). Lists are already expanded to one
/// entry per down block.
struct UNet2DConditionModelConfig {
  std::optional<int64_t> sample_size;
  int64_t in_channels = 4, out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0.0;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "DownBlock2D"};
  std::optional<std::string> mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<bool> only_cross_attention;            ///< per down block
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int64_t> layers_per_block;             ///< per down block (default 2)
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;
  std::string act_fn = "silu";
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::vector<int64_t> cross_attention_dim;          ///< per down block (default 1280)
  std::vector<int64_t> transformer_layers_per_block; ///< per down block (default 1)
  std::vector<int64_t> reverse_transformer_layers_per_block;  ///< per up block; empty = reversed down list
  std::vector<int64_t> attention_head_dim;           ///< per down block (default 8); used as the head count, as diffusers does
  bool use_linear_projection = false;
  bool upcast_attention = false;
  std::string resnet_time_scale_shift = "default";
  std::optional<std::string> addition_embed_type;    ///< null or "text_time" (SDXL)
  std::optional<int64_t> addition_time_embed_dim;
  std::optional<int64_t> projection_class_embeddings_input_dim;
  std::optional<int64_t> time_embedding_dim;
  std::optional<std::string> time_embedding_act_fn;
  std::optional<std::string> timestep_post_act;
  std::optional<int64_t> time_cond_proj_dim;         ///< LCM's guidance embedding (timestep_cond)
  int64_t conv_in_kernel = 3, conv_out_kernel = 3;

  /// Reads a config.json (ModelLoadError naming the field for a wrong type or an unsupported feature such as
  /// class embeddings, encoder_hid_dim, dual cross-attention or num_attention_heads, which diffusers rejects too).
  static UNet2DConditionModelConfig from_config(ModelConfig& config);
  static UNet2DConditionModelConfig from_json(const nlohmann::json& json, const std::string& source = "config");
};

/// Inputs beyond sample / timestep / encoder_hidden_states.
struct UNet2DConditionInputs {
  at::Tensor timestep_cond;  ///< [B, time_cond_proj_dim] (LCM guidance embedding), needs time_cond_proj_dim
  at::Tensor text_embeds;    ///< SDXL added_cond_kwargs: pooled text embeddings [B, P]
  at::Tensor time_ids;       ///< SDXL added_cond_kwargs: [B, 6] (original size, crop, target size)
  /// ControlNet residuals (diffusers' down_block_additional_residuals / mid_block_additional_residual): one per
  /// skip connection of the down blocks (conv_in's output first), added to the skips the up blocks read, and one
  /// added to the mid block's output. Empty / undefined = none.
  std::vector<at::Tensor> down_block_additional_residuals;
  at::Tensor mid_block_additional_residual;
  /// Layer hooks of guiders (PAG, SLG, SEG…), each for its batch slice; stacks are named like
  /// "mid_block.attentions.0.transformer_blocks"; "auto" means the mid block's stack.
  std::vector<LayerHook> hooks;
  /// IP-Adapter image tokens: one tensor per adapter installed with install_ip_adapters
  /// (models/adapters/ip_adapter_unet.h), in the same order, each that adapter's PROJECTED tokens
  /// (IPAdapterImageProjection::project: [B, num_images, tokens, cross]; [B, tokens, cross] is accepted too),
  /// batched like encoder_hidden_states (CFG: the [uncond, cond] rows; PAG: one more copy). This is what diffusers
  /// builds from added_cond_kwargs["image_embeds"] with encoder_hid_proj and hands its IP processors as the second
  /// half of the encoder_hidden_states tuple; the images of one adapter become one token sequence
  /// [B, num_images · tokens, cross], as diffusers' view does. Empty = none: installed adapters add nothing
  /// to this call (the plain UNet). The UNet only checks, reshapes and casts them; IPAdapterAttnProcessor uses them.
  std::vector<at::Tensor> ip_hidden_states;
};

/// The options of the UNet stages built from a UNet-style config (shared with ControlNetModel, whose encoder half
/// is the UNet's).
UNetBlockOptions unet_block_options(const UNet2DConditionModelConfig& c, int64_t in, int64_t out, int64_t temb);

/// diffusers' UNet2DConditionModel; also the "UNet2DConditionModel" component.
class UNet2DConditionModelImpl : public torch::nn::Module, public Component {
 public:
  explicit UNet2DConditionModelImpl(UNet2DConditionModelConfig config);

  /// Builds the model from `folder/subfolder/config.json` (with `config_overrides`) and loads the weights strictly
  /// (variant e.g. "fp16"; tensors converted to `dtype`). Returns it in eval mode.
  static std::shared_ptr<UNet2DConditionModelImpl> from_pretrained(const std::string& folder,
                                                                   const std::string& subfolder = "unet",
                                                                   const std::string& variant = {},
                                                                   const nlohmann::json& config_overrides = {},
                                                                   at::ScalarType dtype = at::kFloat);

  /// sample [B, in_channels, h, w]; timestep a scalar (0-d or one element, broadcast) or [B];
  /// encoder_hidden_states [B, M, cross_attention_dim] → noise prediction [B, out_channels, h, w].
  /// Floating inputs may have any dtype (cast to dtype()); the prediction is always float32
  /// (models/common/precision.h).
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& encoder_hidden_states,
                     const UNet2DConditionInputs& inputs = {});

  /// The block stacks that layer hooks can name ("down_blocks.1.attentions.0.transformer_blocks", …) with their
  /// lengths.
  std::vector<std::pair<std::string, int64_t>> hook_stacks() const;
  /// Sets the processor of every Attention module whose name (e.g. "mid_block.attentions.0.transformer_blocks.0.attn1")
  /// matches the ECMAScript regex; returns how many were set. A fresh processor is made per module by `make`.
  int set_attn_processor(const std::string& name_regex,
                         const std::function<std::shared_ptr<AttentionProcessor>()>& make);

  /// The compute dtype: the parameters' (float32, or bfloat16 for `dtype: bf16`).
  at::ScalarType dtype() const { return conv_in->weight.scalar_type(); }

  std::string type() const override { return "UNet2DConditionModel"; }
  size_t nbytes() const override;

  UNet2DConditionModelConfig config;
  torch::nn::Conv2d conv_in{nullptr};
  Timesteps time_proj{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  Timesteps add_time_proj{nullptr};
  TimestepEmbedding add_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  std::shared_ptr<torch::nn::Module> mid_block;  ///< UNetMidBlock2DCrossAttn or null (mid_block_type null)
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};

 private:
  void validate_hooks(const std::vector<LayerHook>& hooks) const;
  at::Tensor time_embed(const at::Tensor& sample, const at::Tensor& timestep, const UNet2DConditionInputs& inputs);
};
TORCH_MODULE(UNet2DConditionModel);

/// Registers the "UNet2DConditionModel" component type (from_pretrained: folder/subfolder/variant, config
/// overrides; from_config: random weights from the spec's config).
void register_unet_2d_condition(Registry& registry);

}  // namespace tessera
