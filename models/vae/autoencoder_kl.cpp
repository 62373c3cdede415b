#include "models/vae/autoencoder_kl.h"

#include <torch/torch.h>

#include <algorithm>
#include <functional>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/loading/component_factory.h"
#include "models/loading/skip_init.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"

namespace tessera {

AutoencoderKLConfig AutoencoderKLConfig::from_config(ModelConfig& c) {
  AutoencoderKLConfig a;
  a.in_channels = c.get_int("in_channels", a.in_channels);
  a.out_channels = c.get_int("out_channels", a.out_channels);
  a.down_block_types = c.get_string_list("down_block_types", a.down_block_types);
  a.up_block_types = c.get_string_list("up_block_types", a.up_block_types);
  a.block_out_channels = c.get_int_list("block_out_channels", a.block_out_channels);
  a.layers_per_block = c.get_int("layers_per_block", a.layers_per_block);
  a.act_fn = c.get_string("act_fn", a.act_fn);
  a.latent_channels = c.get_int("latent_channels", a.latent_channels);
  a.norm_num_groups = c.get_int("norm_num_groups", a.norm_num_groups);
  if (c.has("sample_size") && c.json().at("sample_size").is_array()) {  // [h, w] in some configs
    auto size = c.get_int_list("sample_size", {});
    if (size.empty()) c.fail("sample_size", "is an empty list");
    a.sample_size = size[0];
  } else {
    a.sample_size = c.get_int("sample_size", a.sample_size);
  }
  a.scaling_factor = c.get_float("scaling_factor", a.scaling_factor);
  a.shift_factor = c.get_optional_float("shift_factor");
  a.latents_mean = c.get_optional_float_list("latents_mean");
  a.latents_std = c.get_optional_float_list("latents_std");
  a.force_upcast = c.get_bool("force_upcast", a.force_upcast);
  a.use_quant_conv = c.get_bool("use_quant_conv", a.use_quant_conv);
  a.use_post_quant_conv = c.get_bool("use_post_quant_conv", a.use_post_quant_conv);
  a.mid_block_add_attention = c.get_bool("mid_block_add_attention", a.mid_block_add_attention);
  if (a.block_out_channels.size() != a.down_block_types.size())
    c.fail("down_block_types", "needs one entry per block_out_channels entry");
  if (a.block_out_channels.size() != a.up_block_types.size())
    c.fail("up_block_types", "needs one entry per block_out_channels entry");
  if (a.layers_per_block < 1) c.fail("layers_per_block", "must be at least 1");
  c.finish();
  return a;
}

at::ScalarType model_compute_dtype(const AutoencoderKLConfig& config, at::ScalarType requested) {
  return config.force_upcast && requested == at::kHalf ? at::kFloat : requested;
}

DiagonalGaussianDistribution::DiagonalGaussianDistribution(const at::Tensor& parameters) {
  auto parts = parameters.chunk(2, 1);  // mean, logvar: [B, C, h, w] each
  mean = parts[0];
  logvar = at::clamp(parts[1], -30.0, 20.0);
  std = at::exp(0.5 * logvar);
  var = at::exp(logvar);
}

at::Tensor DiagonalGaussianDistribution::sample(std::optional<at::Generator> generator) const {
  // randn_tensor draws on the CPU generator for CPU tensors (and for a CPU generator with any device).
  at::Tensor noise = at::randn(mean.sizes(), generator ? c10::optional<at::Generator>(*generator) : c10::nullopt,
                               mean.options().device(at::kCPU));
  return mean + std * noise.to(mean.device());
}

AutoencoderKLImpl::AutoencoderKLImpl(AutoencoderKLConfig config_) : config(std::move(config_)) {
  encoder = register_module("encoder", Encoder(VAECoderOptions()
                                                   .in_channels(config.in_channels)
                                                   .out_channels(config.latent_channels)
                                                   .block_types(config.down_block_types)
                                                   .block_out_channels(config.block_out_channels)
                                                   .layers_per_block(config.layers_per_block)
                                                   .norm_num_groups(config.norm_num_groups)
                                                   .act_fn(config.act_fn)
                                                   .double_z(true)
                                                   .mid_block_add_attention(config.mid_block_add_attention)));
  decoder = register_module("decoder", Decoder(VAECoderOptions()
                                                   .in_channels(config.latent_channels)
                                                   .out_channels(config.out_channels)
                                                   .block_types(config.up_block_types)
                                                   .block_out_channels(config.block_out_channels)
                                                   .layers_per_block(config.layers_per_block)
                                                   .norm_num_groups(config.norm_num_groups)
                                                   .act_fn(config.act_fn)
                                                   .mid_block_add_attention(config.mid_block_add_attention)));
  const int64_t latent2 = 2 * config.latent_channels;
  if (config.use_quant_conv)
    quant_conv = register_module("quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(latent2, latent2, 1)));
  if (config.use_post_quant_conv)
    post_quant_conv = register_module(
        "post_quant_conv",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(config.latent_channels, config.latent_channels, 1)));
}

std::shared_ptr<AutoencoderKLImpl> AutoencoderKLImpl::from_pretrained(const std::string& folder,
                                                                      const std::string& subfolder,
                                                                      const std::string& variant,
                                                                      const nlohmann::json& overrides,
                                                                      at::ScalarType dtype) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  cfg.apply_overrides(overrides);
  AutoencoderKLConfig config = AutoencoderKLConfig::from_config(cfg);
  const at::ScalarType compute_dtype = model_compute_dtype(config, dtype);
  std::shared_ptr<AutoencoderKLImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<AutoencoderKLImpl>(std::move(config));
  }
  load_state_dict(*model, resolve_weight_files(component_dir(folder, subfolder), kDiffusersWeightsName, variant),
                  compute_dtype);
  model->eval();
  return model;
}

namespace {

/// b's first `extent` rows (dim 2) fade in over a's last `extent` rows: diffusers' blend_v.
at::Tensor blend_v(const at::Tensor& a, at::Tensor b, int64_t extent) {
  extent = std::min({a.size(2), b.size(2), extent});
  if (extent <= 0) return b;
  at::Tensor w = (at::arange(extent, a.options().dtype(at::kFloat)) / double(extent)).view({1, 1, extent, 1});
  b = b.clone();
  b.slice(2, 0, extent).copy_(a.slice(2, a.size(2) - extent) * (1 - w) + b.slice(2, 0, extent) * w);
  return b;
}

/// The same along the width (dim 3): diffusers' blend_h.
at::Tensor blend_h(const at::Tensor& a, at::Tensor b, int64_t extent) {
  extent = std::min({a.size(3), b.size(3), extent});
  if (extent <= 0) return b;
  at::Tensor w = (at::arange(extent, a.options().dtype(at::kFloat)) / double(extent)).view({1, 1, 1, extent});
  b = b.clone();
  b.slice(3, 0, extent).copy_(a.slice(3, a.size(3) - extent) * (1 - w) + b.slice(3, 0, extent) * w);
  return b;
}

/// Runs `fn` on tiles of `x` (tile × tile, stepping by `step`), blends each tile into its upper and left
/// neighbours over `blend` rows/columns, crops every tile to `keep` and concatenates: diffusers' tiled_decode /
/// tiled_encode loop with the per-tile model call abstracted.
at::Tensor tiled(const at::Tensor& x, int64_t tile, int64_t step, int64_t blend, int64_t keep,
                 const std::function<at::Tensor(const at::Tensor&)>& fn) {
  std::vector<std::vector<at::Tensor>> rows;
  for (int64_t i = 0; i < x.size(2); i += step) {
    std::vector<at::Tensor> row;
    for (int64_t j = 0; j < x.size(3); j += step)
      row.push_back(fn(x.slice(2, i, i + tile).slice(3, j, j + tile)));  // [B, C, ≤tile, ≤tile] → scaled
    rows.push_back(std::move(row));
  }
  std::vector<at::Tensor> out_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<at::Tensor> out_row;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      at::Tensor t = rows[i][j];
      if (i > 0) t = blend_v(rows[i - 1][j], t, blend);
      if (j > 0) t = blend_h(rows[i][j - 1], t, blend);
      rows[i][j] = t;  // later neighbours blend against the blended tile, as diffusers (it blends in place)
      out_row.push_back(t.slice(2, 0, keep).slice(3, 0, keep));
    }
    out_rows.push_back(at::cat(out_row, 3));
  }
  return at::cat(out_rows, 2);
}

}  // namespace

at::Tensor AutoencoderKLImpl::encode_moments(const at::Tensor& x) {
  at::Tensor h = encoder(x);                  // [B, 2 * latent, h, w]
  return quant_conv ? quant_conv(h) : h;      // [B, 2 * latent, h, w]
}

at::Tensor AutoencoderKLImpl::decode_latents(const at::Tensor& z) {
  at::Tensor h = post_quant_conv ? post_quant_conv(z) : z;  // [B, latent, h, w]
  return decoder(h);                                        // [B, out, h * f, w * f]
}

at::Tensor AutoencoderKLImpl::tiled_encode(const at::Tensor& x) {
  const int64_t sample_tile = config.sample_size, latent_tile = config.sample_size / vae_scale_factor();
  const int64_t step = static_cast<int64_t>(sample_tile * (1 - kTileOverlap));
  const int64_t blend = static_cast<int64_t>(latent_tile * kTileOverlap);
  return tiled(x, sample_tile, step, blend, latent_tile - blend, [&](const at::Tensor& t) { return encode_moments(t); });
}

at::Tensor AutoencoderKLImpl::tiled_decode(const at::Tensor& z) {
  const int64_t sample_tile = config.sample_size, latent_tile = config.sample_size / vae_scale_factor();
  const int64_t step = static_cast<int64_t>(latent_tile * (1 - kTileOverlap));
  const int64_t blend = static_cast<int64_t>(sample_tile * kTileOverlap);
  return tiled(z, latent_tile, step, blend, sample_tile - blend, [&](const at::Tensor& t) { return decode_latents(t); });
}

DiagonalGaussianDistribution AutoencoderKLImpl::encode(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != config.in_channels)
    throw ExecutionError("AutoencoderKL.encode expects [B, " + std::to_string(config.in_channels) +
                         ", H, W] images, got " + std::to_string(x.dim()) + "-D input");
  const at::Tensor xc = x.to(dtype());
  const bool tile = tiling_ && (x.size(2) > config.sample_size || x.size(3) > config.sample_size);
  at::Tensor moments = tile ? tiled_encode(xc) : encode_moments(xc);  // [B, 2 * latent, h, w]
  return DiagonalGaussianDistribution(moments.to(at::kFloat));
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  if (z.dim() != 4 || z.size(1) != config.latent_channels)
    throw ExecutionError("AutoencoderKL.decode expects [B, " + std::to_string(config.latent_channels) +
                         ", h, w] latents, got " + std::to_string(z.dim()) + "-D input");
  const at::Tensor zc = z.to(dtype());
  const int64_t latent_tile = config.sample_size / vae_scale_factor();
  const bool tile = tiling_ && (z.size(2) > latent_tile || z.size(3) > latent_tile);
  return (tile ? tiled_decode(zc) : decode_latents(zc)).to(at::kFloat);  // [B, out, h * f, w * f]
}

at::Tensor AutoencoderKLImpl::forward(const at::Tensor& sample, bool sample_posterior,
                                      std::optional<at::Generator> generator) {
  DiagonalGaussianDistribution posterior = encode(sample);
  at::Tensor z = sample_posterior ? posterior.sample(generator) : posterior.mode();
  return decode(z);
}

int64_t AutoencoderKLImpl::vae_scale_factor() const {
  return int64_t(1) << (config.block_out_channels.size() - 1);
}

size_t AutoencoderKLImpl::nbytes() const { return module_nbytes(*this); }

void register_autoencoder_kl(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "AutoencoderKL";
  info.category = ComponentCategory::Model;
  info.description = "diffusers' AutoencoderKL (the SD 1.x/2.x and SDXL VAE) from a diffusers folder";
  info.create = [](const ComponentSpec& spec) { return create_diffusers_model<AutoencoderKLImpl, AutoencoderKLConfig>(spec); };
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
