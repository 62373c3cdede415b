#include "models/unet/unet_2d_blocks.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/resnet.h"
#include "models/common/transformer_2d.h"

namespace tessera {

namespace {

// The shared building blocks with the arguments diffusers' UNet stages give them.
ResnetBlock2D make_resnet(const UNetBlockOptions& o, int64_t in_channels, int64_t out_channels) {
  return ResnetBlock2D(ResnetBlock2DOptions(in_channels)
                           .out_channels(out_channels)
                           .temb_channels(o.temb_channels())
                           .eps(o.resnet_eps())
                           .groups(o.resnet_groups())
                           .time_embedding_norm(o.resnet_time_scale_shift())
                           .non_linearity(o.resnet_act_fn())
                           .output_scale_factor(o.output_scale_factor()));
}

Transformer2DModel make_transformer(const UNetBlockOptions& o, int64_t channels) {
  return Transformer2DModel(Transformer2DModelOptions(o.num_attention_heads(), channels / o.num_attention_heads(), channels)
                                .num_layers(o.transformer_layers_per_block())
                                .cross_attention_dim(o.cross_attention_dim())
                                .norm_num_groups(o.resnet_groups())
                                .use_linear_projection(o.use_linear_projection())
                                .only_cross_attention(o.only_cross_attention())
                                .upcast_attention(o.upcast_attention()));
}

torch::nn::ModuleList make_downsamplers(const UNetBlockOptions& o) {
  torch::nn::ModuleList list;
  list->push_back(Downsample2D(Downsample2DOptions(o.out_channels())
                                   .use_conv(true)
                                   .out_channels(o.out_channels())
                                   .padding(o.downsample_padding())));
  return list;
}

torch::nn::ModuleList make_upsamplers(const UNetBlockOptions& o) {
  torch::nn::ModuleList list;
  list->push_back(Upsample2D(Upsample2DOptions(o.out_channels()).use_conv(true).out_channels(o.out_channels())));
  return list;
}

at::Tensor resnet_at(torch::nn::ModuleList& list, size_t i, const at::Tensor& x, const at::Tensor& temb) {
  return list[i]->as<ResnetBlock2DImpl>()->forward(x, temb);
}

at::Tensor attention_at(torch::nn::ModuleList& list, size_t i, const at::Tensor& x, const at::Tensor& ehs,
                        const std::vector<LayerHook>* hooks, const std::vector<at::Tensor>* ip_hidden_states) {
  return list[i]->as<Transformer2DModelImpl>()->forward(x, ehs, hooks, ip_hidden_states);
}

at::Tensor upsample(torch::nn::ModuleList& list, const at::Tensor& x, const std::optional<std::vector<int64_t>>& size) {
  return list[0]->as<Upsample2DImpl>()->forward(x, size);
}

// Pops the last skip connection (the up path consumes them in reverse order).
at::Tensor pop_skip(std::vector<at::Tensor>& skips, const char* block) {
  if (skips.empty()) throw ExecutionError(std::string(block) + ": ran out of skip connections");
  at::Tensor s = std::move(skips.back());
  skips.pop_back();
  return s;
}

}  // namespace

// ---- down ----

DownBlock2DImpl::DownBlock2DImpl(UNetBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i)
    resnets->push_back(make_resnet(options, i == 0 ? options.in_channels() : options.out_channels(), options.out_channels()));
  if (options.add_downsample()) downsamplers = register_module("downsamplers", make_downsamplers(options));
}

DownBlockOutput DownBlock2DImpl::forward(const at::Tensor& hidden_states_in, const at::Tensor& temb) {
  at::Tensor hidden_states = hidden_states_in;
  std::vector<at::Tensor> output_states;
  for (size_t i = 0; i < resnets->size(); ++i) {
    hidden_states = resnet_at(resnets, i, hidden_states, temb);  // [B, out, H, W]
    output_states.push_back(hidden_states);
  }
  if (downsamplers) {
    hidden_states = downsamplers[0]->as<Downsample2DImpl>()->forward(hidden_states);  // [B, out, H/2, W/2]
    output_states.push_back(hidden_states);
  }
  return {hidden_states, std::move(output_states)};
}

CrossAttnDownBlock2DImpl::CrossAttnDownBlock2DImpl(UNetBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    resnets->push_back(make_resnet(options, i == 0 ? options.in_channels() : options.out_channels(), options.out_channels()));
    attentions->push_back(make_transformer(options, options.out_channels()));
  }
  if (options.add_downsample()) downsamplers = register_module("downsamplers", make_downsamplers(options));
}

DownBlockOutput CrossAttnDownBlock2DImpl::forward(const at::Tensor& hidden_states_in, const at::Tensor& temb,
                                                  const at::Tensor& encoder_hidden_states,
                                                  const std::vector<LayerHook>* hooks,
                                                  const std::vector<at::Tensor>* ip_hidden_states) {
  at::Tensor hidden_states = hidden_states_in;
  std::vector<at::Tensor> output_states;
  for (size_t i = 0; i < resnets->size(); ++i) {
    hidden_states = resnet_at(resnets, i, hidden_states, temb);                              // [B, out, H, W]
    hidden_states = attention_at(attentions, i, hidden_states, encoder_hidden_states, hooks,
                                 ip_hidden_states);  // [B, out, H, W]
    output_states.push_back(hidden_states);
  }
  if (downsamplers) {
    hidden_states = downsamplers[0]->as<Downsample2DImpl>()->forward(hidden_states);  // [B, out, H/2, W/2]
    output_states.push_back(hidden_states);
  }
  return {hidden_states, std::move(output_states)};
}

// ---- mid ----

UNetMidBlock2DCrossAttnImpl::UNetMidBlock2DCrossAttnImpl(UNetBlockOptions options_) : options(std::move(options_)) {
  const int64_t channels = options.in_channels();
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets->push_back(make_resnet(options, channels, channels));
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    attentions->push_back(make_transformer(options, channels));
    resnets->push_back(make_resnet(options, channels, channels));
  }
}

at::Tensor UNetMidBlock2DCrossAttnImpl::forward(const at::Tensor& hidden_states_in, const at::Tensor& temb,
                                                const at::Tensor& encoder_hidden_states,
                                                const std::vector<LayerHook>* hooks,
                                                const std::vector<at::Tensor>* ip_hidden_states) {
  at::Tensor hidden_states = resnet_at(resnets, 0, hidden_states_in, temb);
  for (size_t i = 0; i < attentions->size(); ++i) {
    hidden_states = attention_at(attentions, i, hidden_states, encoder_hidden_states, hooks, ip_hidden_states);
    hidden_states = resnet_at(resnets, i + 1, hidden_states, temb);
  }
  return hidden_states;
}

// ---- up ----

namespace {
// diffusers' channel bookkeeping for up blocks: resnet i sees (previous output or out) + (skip) channels.
std::pair<int64_t, int64_t> up_resnet_channels(const UNetBlockOptions& o, int64_t i) {
  const int64_t res_skip_channels = i == o.num_layers() - 1 ? o.in_channels() : o.out_channels();
  const int64_t resnet_in_channels = i == 0 ? o.prev_output_channel() : o.out_channels();
  return {resnet_in_channels + res_skip_channels, o.out_channels()};
}
}  // namespace

UpBlock2DImpl::UpBlock2DImpl(UNetBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    auto [in, out] = up_resnet_channels(options, i);
    resnets->push_back(make_resnet(options, in, out));
  }
  if (options.add_upsample()) upsamplers = register_module("upsamplers", make_upsamplers(options));
}

at::Tensor UpBlock2DImpl::forward(const at::Tensor& hidden_states_in, std::vector<at::Tensor> res_hidden_states,
                                  const at::Tensor& temb, const std::optional<std::vector<int64_t>>& upsample_size) {
  at::Tensor hidden_states = hidden_states_in;
  for (size_t i = 0; i < resnets->size(); ++i) {
    at::Tensor skip = pop_skip(res_hidden_states, "UpBlock2D");
    hidden_states = at::cat({hidden_states, skip}, 1);  // [B, C + C_skip, H, W]
    hidden_states = resnet_at(resnets, i, hidden_states, temb);
  }
  if (upsamplers) hidden_states = upsample(upsamplers, hidden_states, upsample_size);  // [B, out, 2H, 2W]
  return hidden_states;
}

CrossAttnUpBlock2DImpl::CrossAttnUpBlock2DImpl(UNetBlockOptions options_) : options(std::move(options_)) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers(); ++i) {
    auto [in, out] = up_resnet_channels(options, i);
    resnets->push_back(make_resnet(options, in, out));
    attentions->push_back(make_transformer(options, options.out_channels()));
  }
  if (options.add_upsample()) upsamplers = register_module("upsamplers", make_upsamplers(options));
}

at::Tensor CrossAttnUpBlock2DImpl::forward(const at::Tensor& hidden_states_in, std::vector<at::Tensor> res_hidden_states,
                                           const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                                           const std::optional<std::vector<int64_t>>& upsample_size,
                                           const std::vector<LayerHook>* hooks,
                                           const std::vector<at::Tensor>* ip_hidden_states) {
  at::Tensor hidden_states = hidden_states_in;
  for (size_t i = 0; i < resnets->size(); ++i) {
    at::Tensor skip = pop_skip(res_hidden_states, "CrossAttnUpBlock2D");
    hidden_states = at::cat({hidden_states, skip}, 1);  // [B, C + C_skip, H, W]
    hidden_states = resnet_at(resnets, i, hidden_states, temb);
    hidden_states = attention_at(attentions, i, hidden_states, encoder_hidden_states, hooks, ip_hidden_states);
  }
  if (upsamplers) hidden_states = upsample(upsamplers, hidden_states, upsample_size);  // [B, out, 2H, 2W]
  return hidden_states;
}

}  // namespace tessera
