#include "models/controlnets/controlnet_model.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/common/precision.h"
#include "models/loading/component_factory.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/skip_init.h"
#include "models/loading/state_dict.h"
#include "models/unet/unet_2d_blocks.h"
#include "models/unet/unet_stages.h"

namespace tessera {

// ---- config ----

ControlNetModelConfig ControlNetModelConfig::from_config(ModelConfig& c) {
  ControlNetModelConfig cn;
  cn.conditioning_channels = c.get_int("conditioning_channels", 3);
  cn.conditioning_embedding_out_channels =
      c.get_int_list("conditioning_embedding_out_channels", cn.conditioning_embedding_out_channels);
  if (cn.conditioning_embedding_out_channels.empty())
    c.fail("conditioning_embedding_out_channels", "must have at least one entry");
  cn.controlnet_conditioning_channel_order =
      c.get_choice("controlnet_conditioning_channel_order", "rgb", {"rgb", "bgr"});
  cn.global_pool_conditions = c.get_bool("global_pool_conditions", false);
  // The shared fields through the UNet's reader; a ControlNet has no up blocks, so the reader is given the up
  // block types mirroring the down blocks it checks them against (they build nothing here).
  std::vector<std::string> up;
  for (const auto& t : c.get_string_list("down_block_types", UNet2DConditionModelConfig().down_block_types))
    up.insert(up.begin(), t == "CrossAttnDownBlock2D" ? "CrossAttnUpBlock2D" : "UpBlock2D");
  c.apply_overrides(nlohmann::json{{"up_block_types", up}});
  cn.unet = UNet2DConditionModelConfig::from_config(c);
  return cn;
}

// ---- conditioning embedding ----

ControlNetConditioningEmbeddingImpl::ControlNetConditioningEmbeddingImpl(int64_t conditioning_embedding_channels,
                                                                         int64_t conditioning_channels,
                                                                         const std::vector<int64_t>& channels) {
  using torch::nn::Conv2d;
  using torch::nn::Conv2dOptions;
  conv_in = register_module("conv_in", Conv2d(Conv2dOptions(conditioning_channels, channels[0], 3).padding(1)));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (size_t i = 0; i + 1 < channels.size(); ++i) {
    blocks->push_back(Conv2d(Conv2dOptions(channels[i], channels[i], 3).padding(1)));
    blocks->push_back(Conv2d(Conv2dOptions(channels[i], channels[i + 1], 3).padding(1).stride(2)));
  }
  conv_out = register_module("conv_out", Conv2d(Conv2dOptions(channels.back(), conditioning_embedding_channels, 3).padding(1)));
}

at::Tensor ControlNetConditioningEmbeddingImpl::forward(const at::Tensor& conditioning) {
  at::Tensor embedding = at::silu(conv_in(conditioning));  // [B, c0, H, W]
  for (size_t i = 0; i < blocks->size(); ++i)
    embedding = at::silu(blocks[i]->as<torch::nn::Conv2dImpl>()->forward(embedding));  // every second conv halves H, W
  return conv_out(embedding);  // [B, block_out_channels[0], H / f, W / f]
}

// ---- model ----

ControlNetModelImpl::ControlNetModelImpl(ControlNetModelConfig config_) : config(std::move(config_)) {
  const UNet2DConditionModelConfig& c = config.unet;
  const int64_t n = static_cast<int64_t>(c.block_out_channels.size());
  using torch::nn::Conv2d;
  using torch::nn::Conv2dOptions;
  // The UNet's encoder half, built as the UNet builds it (models/unet/unet_stages.h).
  conv_in = register_module("conv_in", unet_stages::conv_in(c));
  time_proj = register_module("time_proj", unet_stages::time_proj(c));
  time_embedding = register_module("time_embedding", unet_stages::time_embedding(c));
  if (c.addition_embed_type) {  // "text_time" (SDXL ControlNets)
    add_time_proj = register_module("add_time_proj", unet_stages::add_time_proj(c));
    add_embedding = register_module("add_embedding", unet_stages::add_embedding(c));
  }
  controlnet_cond_embedding = register_module(
      "controlnet_cond_embedding",
      ControlNetConditioningEmbedding(c.block_out_channels[0], config.conditioning_channels,
                                      config.conditioning_embedding_out_channels));

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  controlnet_down_blocks = register_module("controlnet_down_blocks", torch::nn::ModuleList());
  auto zero_conv = [](int64_t channels) { return Conv2d(Conv2dOptions(channels, channels, 1)); };
  controlnet_down_blocks->push_back(zero_conv(c.block_out_channels[0]));  // conv_in's output
  int64_t output_channel = c.block_out_channels[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = c.block_out_channels[i];
    down_blocks->push_back(unet_stages::down_block(c, i, input_channel, output_channel));
    // One zero conv per skip: each layer's output and the downsampler's (every block but the last).
    for (int64_t l = 0; l < c.layers_per_block[i]; ++l) controlnet_down_blocks->push_back(zero_conv(output_channel));
    if (i != n - 1) controlnet_down_blocks->push_back(zero_conv(output_channel));
  }
  if (!c.mid_block_type) throw ModelLoadError("ControlNetModel: mid_block_type null is not supported");
  mid_block = register_module("mid_block", unet_stages::mid_block(c).ptr());
  controlnet_mid_block = register_module("controlnet_mid_block", zero_conv(c.block_out_channels.back()));
}

std::shared_ptr<ControlNetModelImpl> ControlNetModelImpl::from_pretrained(const std::string& folder,
                                                                          const std::string& subfolder,
                                                                          at::ScalarType dtype) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  ControlNetModelConfig config = ControlNetModelConfig::from_config(cfg);
  cfg.finish();
  std::shared_ptr<ControlNetModelImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<ControlNetModelImpl>(std::move(config));
  }
  load_state_dict(*model, resolve_weight_files(component_dir(folder, subfolder), kDiffusersWeightsName), dtype);
  model->eval();
  return model;
}

size_t ControlNetModelImpl::nbytes() const { return module_nbytes(*this); }

at::Tensor ControlNetModelImpl::cond_embedding(const at::Tensor& controlnet_cond) {
  at::Tensor cond = controlnet_cond.to(dtype());
  if (config.controlnet_conditioning_channel_order == "bgr") cond = cond.flip({1});
  return controlnet_cond_embedding(cond);
}

ControlNetOutput ControlNetModelImpl::forward(const at::Tensor& sample_in, const at::Tensor& timestep,
                                              const at::Tensor& encoder_hidden_states_in,
                                              const at::Tensor& controlnet_cond, const UNet2DConditionInputs& inputs,
                                              double conditioning_scale, bool guess_mode) {
  const UNet2DConditionModelConfig& c = config.unet;
  if (sample_in.dim() != 4 || sample_in.size(1) != c.in_channels)
    throw ExecutionError("ControlNetModel: sample must be [B, " + std::to_string(c.in_channels) + ", h, w], got " +
                         c10::str(sample_in.sizes()));
  if (controlnet_cond.dim() != 4 || controlnet_cond.size(1) != config.conditioning_channels)
    throw ExecutionError("ControlNetModel: controlnet_cond must be [B, " + std::to_string(config.conditioning_channels) +
                         ", H, W], got " + c10::str(controlnet_cond.sizes()));
  const at::ScalarType compute_dtype = dtype();
  const at::Tensor sample_c = sample_in.to(compute_dtype);
  const at::Tensor encoder_hidden_states = encoder_hidden_states_in.to(compute_dtype);
  const int64_t batch = sample_c.size(0);

  // Time embedding, as the UNet's.
  at::Tensor timesteps = timestep.to(sample_c.device());
  if (timesteps.dim() == 0) timesteps = timesteps.unsqueeze(0);
  if (timesteps.dim() != 1 || (timesteps.size(0) != 1 && timesteps.size(0) != batch))
    throw ExecutionError("ControlNetModel: timestep must be a scalar or have one entry per batch element");
  timesteps = timesteps.expand({batch});                                     // [B]
  at::Tensor t_emb = time_proj(timesteps).to(compute_dtype);                  // [B, block_out_channels[0]]
  at::Tensor timestep_cond = inputs.timestep_cond.defined() ? inputs.timestep_cond.to(compute_dtype) : at::Tensor();
  at::Tensor emb = time_embedding(t_emb, timestep_cond);                      // [B, time_embed_dim]
  if (c.addition_embed_type) {  // text_time
    if (!inputs.text_embeds.defined() || !inputs.time_ids.defined())
      throw ExecutionError("ControlNetModel: addition_embed_type 'text_time' needs text_embeds and time_ids");
    at::Tensor time_embeds = add_time_proj(inputs.time_ids.flatten());       // [B*6, addition_time_embed_dim]
    time_embeds = time_embeds.reshape({inputs.text_embeds.size(0), -1});       // [B, 6*addition_time_embed_dim]
    at::Tensor add_embeds =
        at::cat({inputs.text_embeds.to(time_embeds.scalar_type()), time_embeds}, -1).to(emb.scalar_type());
    emb = emb + add_embedding(add_embeds);
  }

  at::Tensor sample = conv_in(sample_c);                                      // [B, C0, h, w]
  sample = sample + cond_embedding(controlnet_cond);                          // [B, C0, h, w]

  std::vector<at::Tensor> down_block_res_samples{sample};
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    DownBlockOutput out;
    if (auto* b = down_blocks[i]->as<CrossAttnDownBlock2DImpl>()) out = b->forward(sample, emb, encoder_hidden_states, nullptr);
    else out = down_blocks[i]->as<DownBlock2DImpl>()->forward(sample, emb);
    sample = out.first;
    for (auto& r : out.second) down_block_res_samples.push_back(std::move(r));
  }
  sample = mid_block->as<UNetMidBlock2DCrossAttnImpl>()->forward(sample, emb, encoder_hidden_states, nullptr);

  if (down_block_res_samples.size() != controlnet_down_blocks->size())
    throw ExecutionError("ControlNetModel: " + std::to_string(down_block_res_samples.size()) + " skips but " +
                         std::to_string(controlnet_down_blocks->size()) + " zero convs");
  ControlNetOutput out;
  for (size_t i = 0; i < down_block_res_samples.size(); ++i)
    out.down_block_res_samples.push_back(
        controlnet_down_blocks[i]->as<torch::nn::Conv2dImpl>()->forward(down_block_res_samples[i]));
  out.mid_block_res_sample = controlnet_mid_block(sample);

  if (guess_mode && !config.global_pool_conditions) {
    // Residual k scaled by logspace(-1, 0, n + 1)[k] (float32, as torch.logspace's default dtype), times the scale.
    const int64_t count = static_cast<int64_t>(out.down_block_res_samples.size());
    const at::Tensor scales = at::logspace(-1, 0, count + 1, 10.0, at::TensorOptions().dtype(at::kFloat)) * conditioning_scale;
    for (int64_t k = 0; k < count; ++k) out.down_block_res_samples[k] = out.down_block_res_samples[k] * scales[k].to(compute_dtype);
    out.mid_block_res_sample = out.mid_block_res_sample * scales[count].to(compute_dtype);
  } else {
    for (auto& r : out.down_block_res_samples) r = r * conditioning_scale;
    out.mid_block_res_sample = out.mid_block_res_sample * conditioning_scale;
  }
  if (config.global_pool_conditions) {
    for (auto& r : out.down_block_res_samples) r = r.mean({2, 3}, /*keepdim=*/true);
    out.mid_block_res_sample = out.mid_block_res_sample.mean({2, 3}, /*keepdim=*/true);
  }
  for (auto& r : out.down_block_res_samples) r = r.to(at::kFloat);
  out.mid_block_res_sample = out.mid_block_res_sample.to(at::kFloat);
  return out;
}

void register_controlnet_model(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "ControlNetModel";
  info.category = ComponentCategory::Model;
  info.description = "diffusers' ControlNetModel (SD 1.x/2.x, SDXL) from a diffusers folder: UNet residuals from a "
                     "control image";
  info.create = [](const ComponentSpec& spec) { return create_diffusers_model<ControlNetModelImpl, ControlNetModelConfig>(spec); };
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
