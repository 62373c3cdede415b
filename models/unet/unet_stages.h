#pragma once
/// The stages UNet2DConditionModel and ControlNetModel build alike from a UNet-style config (diffusers' ControlNetModel
/// is the UNet's encoder half): conv_in, the time and SDXL addition embeddings, down block i, the mid block. Each
/// model still registers them under its own (diffusers') names in its constructor, so its layout stays readable
/// there; these only say how one stage is built.
///
///   time_proj = register_module("time_proj", unet_stages::time_proj(config));
///   down_blocks->push_back(unet_stages::down_block(config, i, input_channel, output_channel));
#include <torch/nn/modules/conv.h>

#include <memory>

#include "models/common/embeddings.h"
#include "models/unet/unet_2d_blocks.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera::unet_stages {

/// The time embedding's width: time_embedding_dim, else 4 · block_out_channels[0].
inline int64_t time_embed_dim(const UNet2DConditionModelConfig& c) {
  return c.time_embedding_dim.value_or(c.block_out_channels[0] * 4);
}

/// conv_in: in_channels → block_out_channels[0], kernel conv_in_kernel with "same" padding.
inline torch::nn::Conv2d conv_in(const UNet2DConditionModelConfig& c) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, c.block_out_channels[0], c.conv_in_kernel)
                               .padding((c.conv_in_kernel - 1) / 2));
}

/// time_proj: sinusoidal features of the timestep, block_out_channels[0] wide.
inline Timesteps time_proj(const UNet2DConditionModelConfig& c) {
  return Timesteps(
      TimestepsOptions(c.block_out_channels[0]).flip_sin_to_cos(c.flip_sin_to_cos).downscale_freq_shift(c.freq_shift));
}

/// time_embedding: the MLP from time_proj's features to time_embed_dim.
inline TimestepEmbedding time_embedding(const UNet2DConditionModelConfig& c) {
  return TimestepEmbedding(TimestepEmbeddingOptions(c.block_out_channels[0], time_embed_dim(c))
                               .act_fn(c.act_fn)
                               .post_act_fn(c.timestep_post_act)
                               .cond_proj_dim(c.time_cond_proj_dim));
}

/// SDXL's (addition_embed_type "text_time") add_time_proj: sinusoidal features of each time id.
inline Timesteps add_time_proj(const UNet2DConditionModelConfig& c) {
  return Timesteps(TimestepsOptions(*c.addition_time_embed_dim)
                       .flip_sin_to_cos(c.flip_sin_to_cos)
                       .downscale_freq_shift(c.freq_shift));
}

/// SDXL's add_embedding: [pooled text embeds, time-id features] → time_embed_dim.
inline TimestepEmbedding add_embedding(const UNet2DConditionModelConfig& c) {
  return TimestepEmbedding(TimestepEmbeddingOptions(*c.projection_class_embeddings_input_dim, time_embed_dim(c)));
}

/// Down block i (CrossAttnDownBlock2D or DownBlock2D by down_block_types[i]), input → output channels, with a
/// downsampler unless it is the last.
inline std::shared_ptr<torch::nn::Module> down_block(const UNet2DConditionModelConfig& c, size_t i,
                                                     int64_t input_channel, int64_t output_channel) {
  const UNetBlockOptions o = unet_block_options(c, input_channel, output_channel, time_embed_dim(c))
                                 .num_layers(c.layers_per_block[i])
                                 .transformer_layers_per_block(c.transformer_layers_per_block[i])
                                 .add_downsample(i + 1 != c.block_out_channels.size())
                                 .num_attention_heads(c.attention_head_dim[i])
                                 .cross_attention_dim(c.cross_attention_dim[i])
                                 .only_cross_attention(c.only_cross_attention[i]);
  if (c.down_block_types[i] == "CrossAttnDownBlock2D") return CrossAttnDownBlock2D(o).ptr();
  return DownBlock2D(o).ptr();
}

/// The UNetMidBlock2DCrossAttn at the last block's width.
inline UNetMidBlock2DCrossAttn mid_block(const UNet2DConditionModelConfig& c) {
  const int64_t width = c.block_out_channels.back();
  return UNetMidBlock2DCrossAttn(unet_block_options(c, width, width, time_embed_dim(c))
                                     .output_scale_factor(c.mid_block_scale_factor)
                                     .transformer_layers_per_block(c.transformer_layers_per_block.back())
                                     .num_attention_heads(c.attention_head_dim.back())
                                     .cross_attention_dim(c.cross_attention_dim.back()));
}

}  // namespace tessera::unet_stages
