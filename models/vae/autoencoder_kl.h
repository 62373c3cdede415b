#pragma once
/// diffusers' AutoencoderKL: the KL-regularised VAE of Stable Diffusion 1.x/2.x and SDXL. Keys as in diffusers
/// (encoder.*, decoder.*, quant_conv, post_quant_conv); configured from config.json with diffusers' defaults.
///
///   auto vae = AutoencoderKLImpl::from_pretrained("stable-diffusion-v1-5", "vae");
///   DiagonalGaussianDistribution dist = vae->encode(image);         // image [B, 3, H, W] in [-1, 1]
///   at::Tensor latents = dist.sample(generator) * vae->config.scaling_factor;
///   at::Tensor decoded = vae->decode(latents / vae->config.scaling_factor);   // [B, 3, H, W] in ~[-1, 1]
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/components.h"
#include "models/vae/vae.h"

namespace tessera {

class ModelConfig;
class Registry;

/// AutoencoderKL's config.json fields, with diffusers' defaults.
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types{"DownEncoderBlock2D"};
  std::vector<std::string> up_block_types{"UpDecoderBlock2D"};
  std::vector<int64_t> block_out_channels{64};
  int64_t layers_per_block = 1;
  std::string act_fn = "silu";
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;
  /// Latents fed to the UNet are `(z - shift_factor) * scaling_factor`; decode divides it out again (the
  /// pipelines do both, not the model).
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;
  std::optional<std::vector<double>> latents_mean, latents_std;
  /// The VAE overflows in float16 (SD 1.x, SDXL's original VAE): pipelines run it in float32 even when the rest
  /// of the pipeline is float16. Honoured by model_compute_dtype below: a float16 request builds a float32 VAE.
  /// bfloat16 is not upcast (as in diffusers, whose upcast_vae checks for float16 only): it has float32's
  /// exponent range, so the activations that overflow float16 fit.
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  /// Reads every field (ModelLoadError naming a wrong-typed field and the file) and warns about unknown ones.
  static AutoencoderKLConfig from_config(ModelConfig& config);
};

/// The dtype an AutoencoderKL computes in when `requested` is asked for: float32 when the config's force_upcast
/// is set and `requested` is float16, else `requested` (the create_diffusers_model hook).
at::ScalarType model_compute_dtype(const AutoencoderKLConfig& config, at::ScalarType requested);

/// diffusers' DiagonalGaussianDistribution: the encoder's latent distribution, logvar clamped to [-30, 20].
struct DiagonalGaussianDistribution {
  /// parameters [B, 2C, h, w] = concat(mean, logvar) along channels.
  explicit DiagonalGaussianDistribution(const at::Tensor& parameters);
  at::Tensor mean, logvar, std, var;
  /// mean + std * noise, noise drawn like diffusers' randn_tensor(mean.shape, generator, dtype) on the CPU
  /// generator (the same draws as PyTorch for the same seed), then moved to the mean's device.
  at::Tensor sample(std::optional<at::Generator> generator = std::nullopt) const;
  /// mean + std * noise with given noise (e.g. injected for parity).
  at::Tensor sample_with_noise(const at::Tensor& noise) const { return mean + std * noise; }
  /// The mode (= mean).
  at::Tensor mode() const { return mean; }
};

/// diffusers' AutoencoderKL. A Component ("AutoencoderKL") and a torch::nn::Module.
class AutoencoderKLImpl : public torch::nn::Module, public Component {
 public:
  explicit AutoencoderKLImpl(AutoencoderKLConfig config);

  /// Reads folder/subfolder/config.json (with `overrides` applied), builds the model and loads its weights
  /// strictly (variant: "" or e.g. "fp16"; weights converted to `dtype`). Returns the model in eval mode.
  static std::shared_ptr<AutoencoderKLImpl> from_pretrained(const std::string& folder, const std::string& subfolder,
                                                            const std::string& variant = {},
                                                            const nlohmann::json& overrides = {},
                                                            at::ScalarType dtype = at::kFloat);

  /// image [B, in_channels, H, W] in [-1, 1] → latent distribution over [B, latent_channels, H/f, W/f].
  /// Inputs of any floating dtype are cast to dtype(); the distribution's tensors are float32.
  DiagonalGaussianDistribution encode(const at::Tensor& x);
  /// z [B, latent_channels, h, w] (already divided by scaling_factor) → [B, out_channels, h*f, w*f], float32.
  at::Tensor decode(const at::Tensor& z);
  /// encode → sample (or mode when `sample_posterior` is false) → decode, as diffusers' forward.
  at::Tensor forward(const at::Tensor& sample, bool sample_posterior = false,
                     std::optional<at::Generator> generator = std::nullopt);

  /// The spatial down-scaling factor 2^(levels-1) (8 for SD).
  int64_t vae_scale_factor() const;

  /// Tiled encode/decode (diffusers' enable_tiling), for images larger than the VAE was trained on: bounded
  /// memory. Tiles are config.sample_size pixels (sample_size / factor latents), stepping by 75% of a tile;
  /// each tile sees a 25% overlap with its upper and left neighbours, which is blended linearly (row y of the
  /// overlap takes y/extent of the new tile, 1 - y/extent of the old one), then every tile is cropped to the
  /// step size and the crops are concatenated. Seams are therefore smooth ramps, not hard edges; results
  /// differ from untiled decoding near tile borders (each tile's group norms see only the tile). Images no
  /// larger than one tile take the untiled path, exactly as before.
  void enable_tiling(bool on = true) { tiling_ = on; }
  static constexpr double kTileOverlap = 0.25;  ///< diffusers' tile_overlap_factor
  bool tiling() const { return tiling_; }

  /// The compute dtype: the parameters' (float32, or bfloat16 for `dtype: bf16`).
  at::ScalarType dtype() const { return decoder->conv_in->weight.scalar_type(); }

  std::string type() const override { return "AutoencoderKL"; }
  size_t nbytes() const override;

  AutoencoderKLConfig config;
  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};

 private:
  at::Tensor encode_moments(const at::Tensor& x);  ///< encoder + quant_conv, [B, 2C, h, w]
  at::Tensor decode_latents(const at::Tensor& z);  ///< post_quant_conv + decoder
  at::Tensor tiled_encode(const at::Tensor& x);
  at::Tensor tiled_decode(const at::Tensor& z);
  bool tiling_ = false;
};
TORCH_MODULE(AutoencoderKL);

/// Registers the "AutoencoderKL" component type (from_pretrained: folder/subfolder/variant with config
/// overrides; from_config: random weights from the spec's config, for tests).
void register_autoencoder_kl(Registry& registry);

}  // namespace tessera
