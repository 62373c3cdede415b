#include "models/vae/vae.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/precision.h"
#include "models/common/resnet.h"

namespace tessera {

namespace {

ResnetBlock2D make_resnet(const VAEBlockOptions& o, int64_t in_channels, int64_t out_channels) {
  return ResnetBlock2D(ResnetBlock2DOptions(in_channels)
                           .out_channels(out_channels)
                           .temb_channels(0)  // the VAE has no time embedding
                           .eps(o.resnet_eps())
                           .groups(o.resnet_groups())
                           .non_linearity(o.resnet_act_fn()));
}

at::Tensor resnet_at(torch::nn::ModuleList& list, size_t i, const at::Tensor& x) {
  return list[i]->as<ResnetBlock2DImpl>()->forward(x);
}

}  // namespace

AttentionBlockImpl::AttentionBlockImpl(AttentionBlockOptions options_) : options(std::move(options_)) {
  const int64_t c = options.channels();
  const int64_t head_dim = options.attention_head_dim() > 0 ? options.attention_head_dim() : c;
  if (c % head_dim != 0)
    throw ModelLoadError("VAE attention: channels " + std::to_string(c) + " not divisible by attention_head_dim " +
                         std::to_string(head_dim));
  heads = c / head_dim;
  group_norm = register_module(
      "group_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_num_groups(), c).eps(options.eps())));
  to_q = register_module("to_q", torch::nn::Linear(c, c));
  to_k = register_module("to_k", torch::nn::Linear(c, c));
  to_v = register_module("to_v", torch::nn::Linear(c, c));
  to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(c, c)));
}

at::Tensor AttentionBlockImpl::forward(const at::Tensor& hidden_states) {
  const at::Tensor residual = hidden_states;
  const int64_t batch = hidden_states.size(0), channels = hidden_states.size(1);
  const int64_t height = hidden_states.size(2), width = hidden_states.size(3);
  const int64_t head_dim = channels / heads;
  // group_norm over [B, C, H*W] is the same as diffusers' norm of the transposed sequence.
  at::Tensor x = group_norm_fp32(*group_norm, hidden_states.view({batch, channels, height * width}));  // [B, C, HW]
  x = x.transpose(1, 2);                                                              // [B, HW, C]

  at::Tensor query = to_q(x), key = to_k(x), value = to_v(x);  // [B, HW, C]
  query = query.view({batch, -1, heads, head_dim}).transpose(1, 2);  // [B, heads, HW, d]
  key = key.view({batch, -1, heads, head_dim}).transpose(1, 2);      // [B, heads, HW, d]
  value = value.view({batch, -1, heads, head_dim}).transpose(1, 2);  // [B, heads, HW, d]
  at::Tensor out = dispatch_attention(query, key, value, {}, std::nullopt, options.backend());  // [B, heads, HW, d]
  out = out.transpose(1, 2).reshape({batch, -1, channels});  // [B, HW, C]

  out = to_out[0]->as<torch::nn::LinearImpl>()->forward(out);  // to_out.1 (dropout) is the identity
  out = out.transpose(1, 2).reshape({batch, channels, height, width});  // [B, C, H, W]
  out = out + residual;
  if (options.rescale_output_factor() != 1.0) out = out / options.rescale_output_factor();
  return out;
}

UNetMidBlock2DImpl::UNetMidBlock2DImpl(VAEBlockOptions options_) : options(std::move(options_)) {
  const int64_t c = options.in_channels();
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(make_resnet(options, c, c));
  if (options.add_attention()) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    if (options.add_attention())
      attentions->push_back(AttentionBlock(AttentionBlockOptions(c)
                                               .attention_head_dim(c)
                                               .norm_num_groups(options.resnet_groups())
                                               .eps(options.resnet_eps())));
    resnets->push_back(make_resnet(options, c, c));
  }
}

at::Tensor UNetMidBlock2DImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor h = resnet_at(resnets, 0, hidden_states);
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    if (attentions) h = attentions[i]->as<AttentionBlockImpl>()->forward(h);
    h = resnet_at(resnets, i + 1, h);
  }
  return h;
}

DownEncoderBlock2DImpl::DownEncoderBlock2DImpl(VAEBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i)
    resnets->push_back(make_resnet(options, i == 0 ? options.in_channels() : options.out_channels(),
                                   options.out_channels()));
  if (options.add_sample())
    downsamplers = register_module(
        "downsamplers", torch::nn::ModuleList(Downsample2D(Downsample2DOptions(options.out_channels())
                                                               .use_conv(true)
                                                               .out_channels(options.out_channels())
                                                               .padding(options.downsample_padding()))));
}

at::Tensor DownEncoderBlock2DImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor h = hidden_states;
  for (size_t i = 0; i < resnets->size(); ++i) h = resnet_at(resnets, i, h);
  if (downsamplers) h = downsamplers[0]->as<Downsample2DImpl>()->forward(h);  // [B, out, H/2, W/2]
  return h;
}

UpDecoderBlock2DImpl::UpDecoderBlock2DImpl(VAEBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i)
    resnets->push_back(make_resnet(options, i == 0 ? options.in_channels() : options.out_channels(),
                                   options.out_channels()));
  if (options.add_sample())
    upsamplers = register_module(
        "upsamplers", torch::nn::ModuleList(Upsample2D(
                          Upsample2DOptions(options.out_channels()).use_conv(true).out_channels(options.out_channels()))));
}

at::Tensor UpDecoderBlock2DImpl::forward(const at::Tensor& hidden_states) {
  at::Tensor h = hidden_states;
  for (size_t i = 0; i < resnets->size(); ++i) h = resnet_at(resnets, i, h);
  if (upsamplers) h = upsamplers[0]->as<Upsample2DImpl>()->forward(h);  // [B, out, 2H, 2W]
  return h;
}

namespace {

void check_coder_options(const VAECoderOptions& o, const char* what, const char* block_type) {
  if (o.block_out_channels().empty()) throw ModelLoadError(std::string(what) + ": block_out_channels is empty");
  if (o.block_types().size() != o.block_out_channels().size())
    throw ModelLoadError(std::string(what) + ": " + std::to_string(o.block_types().size()) + " block types but " +
                         std::to_string(o.block_out_channels().size()) + " block_out_channels");
  for (const auto& t : o.block_types())
    if (t != block_type)
      throw ModelLoadError(std::string(what) + ": block type '" + t + "' is not supported (only " + block_type + ")");
  for (int64_t c : o.block_out_channels())
    if (c % o.norm_num_groups() != 0)
      throw ModelLoadError(std::string(what) + ": block_out_channels " + std::to_string(c) +
                           " is not divisible by norm_num_groups " + std::to_string(o.norm_num_groups()));
}

}  // namespace

EncoderImpl::EncoderImpl(VAECoderOptions options_) : options(std::move(options_)) {
  check_coder_options(options, "Encoder", "DownEncoderBlock2D");
  check_activation(options.act_fn());
  const auto& channels = options.block_out_channels();
  conv_in = register_module("conv_in",
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), channels[0], 3).padding(1)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t output_channel = channels[0];
  for (size_t i = 0; i < channels.size(); ++i) {
    const int64_t input_channel = output_channel;
    output_channel = channels[i];
    down_blocks->push_back(DownEncoderBlock2D(VAEBlockOptions(input_channel, output_channel)
                                                  .num_layers(options.layers_per_block())
                                                  .resnet_act_fn(options.act_fn())
                                                  .resnet_groups(options.norm_num_groups())
                                                  .add_sample(i + 1 != channels.size())
                                                  .downsample_padding(0)));
  }
  mid_block = register_module("mid_block", UNetMidBlock2D(VAEBlockOptions(channels.back(), channels.back())
                                                               .resnet_act_fn(options.act_fn())
                                                               .resnet_groups(options.norm_num_groups())
                                                               .add_attention(options.mid_block_add_attention())));
  conv_norm_out = register_module(
      "conv_norm_out",
      torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_num_groups(), channels.back()).eps(1e-6)));
  const int64_t conv_out_channels = options.double_z() ? 2 * options.out_channels() : options.out_channels();
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels.back(), conv_out_channels, 3).padding(1)));
}

at::Tensor EncoderImpl::forward(const at::Tensor& sample) {
  at::Tensor h = conv_in(sample);  // [B, c0, H, W]
  for (size_t i = 0; i < down_blocks->size(); ++i) h = down_blocks[i]->as<DownEncoderBlock2DImpl>()->forward(h);
  h = mid_block(h);
  h = group_norm_fp32(*conv_norm_out, h);
  h = silu_after_norm(std::move(h));  // conv_act, in place on the norm's output
  h = conv_out(h);  // [B, (2*)latent, h, w]
  return h;
}

DecoderImpl::DecoderImpl(VAECoderOptions options_) : options(std::move(options_)) {
  check_coder_options(options, "Decoder", "UpDecoderBlock2D");
  check_activation(options.act_fn());
  const auto& channels = options.block_out_channels();
  conv_in = register_module(
      "conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), channels.back(), 3).padding(1)));
  mid_block = register_module("mid_block", UNetMidBlock2D(VAEBlockOptions(channels.back(), channels.back())
                                                               .resnet_act_fn(options.act_fn())
                                                               .resnet_groups(options.norm_num_groups())
                                                               .add_attention(options.mid_block_add_attention())));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  std::vector<int64_t> reversed(channels.rbegin(), channels.rend());
  int64_t output_channel = reversed[0];
  for (size_t i = 0; i < reversed.size(); ++i) {
    const int64_t prev_output_channel = output_channel;
    output_channel = reversed[i];
    up_blocks->push_back(UpDecoderBlock2D(VAEBlockOptions(prev_output_channel, output_channel)
                                              .num_layers(options.layers_per_block() + 1)
                                              .resnet_act_fn(options.act_fn())
                                              .resnet_groups(options.norm_num_groups())
                                              .add_sample(i + 1 != reversed.size())));
  }
  conv_norm_out = register_module(
      "conv_norm_out",
      torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_num_groups(), channels[0]).eps(1e-6)));
  conv_out = register_module(
      "conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels[0], options.out_channels(), 3).padding(1)));
}

at::Tensor DecoderImpl::forward(const at::Tensor& sample) {
  at::Tensor h = conv_in(sample);  // [B, c_last, h, w]
  h = mid_block(h);
  for (size_t i = 0; i < up_blocks->size(); ++i) h = up_blocks[i]->as<UpDecoderBlock2DImpl>()->forward(h);
  h = group_norm_fp32(*conv_norm_out, h);
  h = silu_after_norm(std::move(h));  // conv_act, in place on the norm's output
  h = conv_out(h);  // [B, out, H, W]
  return h;
}

}  // namespace tessera
