#pragma once
/// IP-Adapter (SD 1.x / SDXL): the image projection that turns CLIP image features into extra cross-attention
/// tokens (diffusers' ImageProjection and IPAdapterPlusImageProjection, models/embeddings.py, with diffusers'
/// module names), and the loader of an IP-Adapter weight file in the ORIGINAL layout (h94/IP-Adapter's
/// `.safetensors`: `image_proj.*` + `ip_adapter.<id>.to_k_ip.weight` / `.to_v_ip.weight`), converted as diffusers'
/// `_convert_ip_adapter_image_proj_to_diffusers` (loaders/unet.py) does.
///
///   auto ip = IPAdapterImpl::from_file("ip-adapter_sd15.safetensors");
///   at::Tensor feats = ip->uses_penultimate_hidden_states() ? enc.hidden_states[n - 2] : enc.image_embeds;
///   at::Tensor tokens = ip->image_proj->project(feats.unsqueeze(1));  // [B, 1, tokens, cross]
///   const IPAdapterAttentionWeights& w = ip->layers.at(1);             // to_k_ip / to_v_ip of the first attn2
///
/// **ip ids → UNet layers.** The file numbers the UNet's attention processors as diffusers lists them in
/// `unet.attn_processors` (attn1 even, attn2 odd): ids 1, 3, 5, … are the cross-attention (attn2) layers in the order
/// down_blocks (block by block, attention by attention, transformer block by transformer block) → up_blocks →
/// mid_block (diffusers registers up_blocks before assigning mid_block). SD 1.5: 16 layers (ids 1..31, the mid
/// block is 31); SDXL: 70 (1..139). tiny-sd: 1,3 = down_blocks.1.attentions.{0,1}, 5,7,9 =
/// up_blocks.0.attentions.{0,1,2}, 11 = mid_block. Tessera's UNet registers down, mid, up: assign ids explicitly,
/// never in named_modules() order. A wrong order loads without a shape error (every layer is [hidden, cross]).
/// Resampler attention layers of a Plus adapter are not UNet layers and get no id.
///
/// The attention processor then computes, per attn2 layer with weights w and scale s (IPAdapterAttnProcessor):
///   out = attn(q, to_k(text), to_v(text)) + s · attn(q, ip_tokens · w.to_k_ip^T, ip_tokens · w.to_v_ip^T)
/// (same heads/scale as the text attention, no mask), then to_out; s = 0 skips the second term.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tessera/components.h"
#include "models/common/transformer_2d.h"
#include "models/vision/clip_image_processor.h"
#include "models/vision/clip_vision_model.h"

namespace tessera {

class Registry;

/// The image projections' common interface (one entry of diffusers' MultiIPAdapterImageProjection).
class IPAdapterImageProjectionImpl : public torch::nn::Module {
 public:
  virtual ~IPAdapterImageProjectionImpl() = default;
  /// diffusers' class name ("ImageProjection", "IPAdapterPlusImageProjection").
  virtual std::string class_name() const = 0;
  /// image features [N, ...] (ImageProjection: [N, image_embed_dim]; Plus: [N, L, image_embed_dim]) →
  /// [N, num_tokens, cross_attention_dim], in the parameters' dtype.
  virtual at::Tensor forward(const at::Tensor& image_embeds) = 0;
  /// MultiIPAdapterImageProjection's per-adapter step: [B, num_images, ...] → [B, num_images, num_tokens, cross]
  /// float32 (the rows are projected independently). ExecutionError on a wrong shape.
  at::Tensor project(const at::Tensor& image_embeds);

  int64_t image_embed_dim = 0, cross_attention_dim = 0, num_tokens = 0;
  /// Dims of the input after the two leading ones: 1 (ImageProjection) or 2 (Plus).
  int64_t feature_dims = 1;
};

/// diffusers' ImageProjection: image_embeds Linear(image_embed_dim → num_tokens · cross), reshape
/// [N, num_tokens, cross], norm LayerNorm(cross).
class ImageProjectionImpl : public IPAdapterImageProjectionImpl {
 public:
  ImageProjectionImpl(int64_t image_embed_dim, int64_t cross_attention_dim, int64_t num_image_text_embeds = 4);
  std::string class_name() const override { return "ImageProjection"; }
  at::Tensor forward(const at::Tensor& image_embeds) override;

  torch::nn::Linear image_embeds{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};

/// The Resampler's block: ln0 (of the image features), ln1 (of the latents), attn (Attention, dim_head 64, no
/// biases) with keys/values cat([ln0(x), ln1(latents)]), ff = [LayerNorm, FeedForward(gelu, no bias)].
class IPAdapterPlusImageProjectionBlockImpl : public torch::nn::Module {
 public:
  IPAdapterPlusImageProjectionBlockImpl(int64_t embed_dims, int64_t dim_head, int64_t heads, int64_t ff_inner_dim);
  /// x [N, L, hidden] (proj_in's output), latents [N, Q, hidden] → [N, Q, hidden].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& latents, const at::Tensor& residual);

  torch::nn::LayerNorm ln0{nullptr}, ln1{nullptr};
  Attention attn{nullptr};
  torch::nn::LayerNorm ff_norm{nullptr};  ///< ff.0
  FeedForward ff_feed_forward{nullptr};   ///< ff.1
  torch::nn::ModuleList ff{nullptr};
};
TORCH_MODULE(IPAdapterPlusImageProjectionBlock);

/// The dimensions of an IPAdapterPlusImageProjection (inferred from a file by read_ip_adapter_state_dict).
struct IPAdapterPlusImageProjectionConfig {
  int64_t embed_dims = 768;    ///< the image encoder's hidden size
  int64_t output_dims = 1024;  ///< the UNet's cross_attention_dim
  int64_t hidden_dims = 1280;
  int64_t depth = 4;
  int64_t dim_head = 64;
  int64_t heads = 16;
  int64_t num_queries = 8;
  int64_t ff_inner_dim = 5120;  ///< hidden_dims · ffn_ratio (4)
};

/// diffusers' IPAdapterPlusImageProjection (the Resampler): latents [1, Q, hidden] repeated over the batch,
/// x = proj_in(x); per block latents = attn(...) + latents, latents = ff(latents) + latents; proj_out, norm_out.
class IPAdapterPlusImageProjectionImpl : public IPAdapterImageProjectionImpl {
 public:
  explicit IPAdapterPlusImageProjectionImpl(const IPAdapterPlusImageProjectionConfig& config);
  std::string class_name() const override { return "IPAdapterPlusImageProjection"; }
  at::Tensor forward(const at::Tensor& image_embeds) override;

  IPAdapterPlusImageProjectionConfig config;
  at::Tensor latents;
  torch::nn::Linear proj_in{nullptr}, proj_out{nullptr};
  torch::nn::LayerNorm norm_out{nullptr};
  torch::nn::ModuleList layers{nullptr};
};

/// One UNet cross-attention layer's IP weights, Linear weights [hidden, cross] without bias.
struct IPAdapterAttentionWeights {
  at::Tensor to_k_ip, to_v_ip;
};

/// Which image projection a file holds.
enum class IPAdapterKind {
  Base,  ///< "IP-Adapter": ImageProjection of image_embeds, negative = zeros
  Plus,  ///< "IP-Adapter Plus": Resampler of hidden_states[-2], negative = encoder(zeros_like(pixel_values))
};
const char* ip_adapter_kind_name(IPAdapterKind kind);

/// An IP-Adapter file's tensors converted to diffusers' names, with the dimensions inferred from their shapes.
struct IPAdapterStateDict {
  std::string file;
  IPAdapterKind kind = IPAdapterKind::Base;
  std::map<std::string, at::Tensor> image_proj;  ///< diffusers names ("image_embeds.weight", "layers.0.attn.to_k.weight")
  std::map<int64_t, IPAdapterAttentionWeights> layers;  ///< id (1, 3, 5, …) → weights
  int64_t image_embed_dim = 0;      ///< input features (base: projection_dim; Plus: the encoder's hidden size)
  int64_t cross_attention_dim = 0;  ///< output features (the UNet's cross_attention_dim)
  int64_t num_tokens = 0;           ///< tokens per image (base: 4; Plus: the latents' count)
  IPAdapterPlusImageProjectionConfig plus;  ///< Plus only
};

/// Reads an IP-Adapter `.safetensors` file (original layout; a Plus file already in diffusers' names, with
/// `layers.N.attn.*`, is accepted as is) and converts it:
///  - base (`image_proj.proj.weight`): proj → image_embeds, norm → norm; tokens 4, cross = proj rows / 4;
///  - Plus (otherwise): layers.N.0.{norm1 → ln0, norm2 → ln1, to_q → attn.to_q, to_kv → attn.to_k / attn.to_v
///    (first / second half of the rows), to_out → attn.to_out.0}, layers.N.1.{0 → ff.0, 1 → ff.1.net.0.proj,
///    3 → ff.1.net.2}; heads = to_q rows / 64. Depth and the ff width come from the keys and shapes (diffusers fixes
///    them at 4 and 4 · hidden, which the published files have).
/// Keys outside `image_proj.` / `ip_adapter.` are ignored (diffusers reads only those prefixes).
/// ModelLoadError naming the file when: it is not a safetensors file (`.bin` pickles hold nested dicts: use the
/// `.safetensors` beside them); the `image_proj.*` or `ip_adapter.*.to_k_ip.weight` keys are missing (not an
/// IP-Adapter file); the projection is a variant Tessera does not implement (Full, FaceID, FaceID-Plus); an ip key is
/// malformed, an id is not a positive odd number, ids 1, 3, … have a gap, to_k_ip / to_v_ip is missing or their
/// shapes are not the same [hidden, cross] with cross = the projection's output width.
IPAdapterStateDict read_ip_adapter_state_dict(const std::string& file);

/// A loaded IP-Adapter (component type "IPAdapter"): its image projection (submodule `image_proj`), the per-layer
/// to_k_ip / to_v_ip weights the UNet's IP attention processors use and, when loaded with one, its image encoder
/// and that encoder's preprocessing (what diffusers' load_ip_adapter loads next to the file).
class IPAdapterImpl : public torch::nn::Module, public Component {
 public:
  /// read_ip_adapter_state_dict, builds the projection and loads it strictly; tensors in `dtype`. Evaluation mode.
  static std::shared_ptr<IPAdapterImpl> from_file(const std::string& file, at::ScalarType dtype = at::kFloat);
  /// from_file plus the image encoder (CLIPVisionModelWithProjection) from `image_encoder_dir`: a folder, or one
  /// .safetensors file (CLIPVisionModelWithProjectionImpl::from_file, ComfyUI's clip_vision files); "" = the
  /// folder `image_encoder` beside the file, as diffusers' image_encoder_folder="image_encoder"; a relative path
  /// that does not exist from the working directory is taken from the file's folder. The feature extractor is the folder's preprocessor_config.json when it has one,
  /// else CLIPImageProcessor(size=crop=image_size of the encoder), as diffusers builds it. ModelLoadError naming
  /// the file and the folder when the folder is missing or its encoder's output width is not the projection's
  /// input width (a base adapter takes image_embeds [projection_dim], a Plus one hidden_states [hidden_size]).
  static std::shared_ptr<IPAdapterImpl> load(const std::string& file, const std::string& image_encoder_dir,
                                             at::ScalarType dtype = at::kFloat);

  /// The encoder features the projection takes, for images preprocessed to pixel_values [N, 3, S, S], and their
  /// negative (what diffusers' encode_image returns): base: image_embeds [N, D] and zeros; Plus: hidden_states[-2]
  /// [N, L, H] of the images and of zeros_like(pixel_values). ExecutionError when no encoder was loaded.
  std::pair<at::Tensor, at::Tensor> encode_image(const at::Tensor& pixel_values);

  /// Plus adapters consume the image encoder's penultimate hidden states, base ones its image_embeds.
  bool uses_penultimate_hidden_states() const { return kind == IPAdapterKind::Plus; }
  std::string type() const override { return "IPAdapter"; }
  size_t nbytes() const override;

  std::string file;
  IPAdapterKind kind = IPAdapterKind::Base;
  std::shared_ptr<IPAdapterImageProjectionImpl> image_proj;
  std::map<int64_t, IPAdapterAttentionWeights> layers;  ///< id → weights (see the id rule at the top)
  std::string image_encoder_dir;                                   ///< "" when loaded without one (from_file)
  std::shared_ptr<CLIPVisionModelWithProjectionImpl> image_encoder;  ///< submodule `image_encoder`, or null
  CLIPImageProcessor feature_extractor;
};

/// The adapter file a component's `from` names: the path itself, or "FOLDER:PATH" = FOLDER/PATH (a repository and
/// the file in it, as diffusers' load_ip_adapter("h94/IP-Adapter", subfolder="sdxl_models",
/// weight_name="ip-adapter_sdxl.safetensors") is written `IP-Adapter:sdxl_models/ip-adapter_sdxl.safetensors`)
/// when the path itself does not exist. Returned unchanged when neither exists (the loader then names it).
std::string resolve_ip_adapter_file(const std::string& from);

/// Registers the "IPAdapter" component type: `from` is the adapter's .safetensors file (resolve_ip_adapter_file),
/// `config_from` its image encoder folder ("" = `image_encoder` beside the file); both are loaded
/// (IPAdapterImpl::load).
void register_ip_adapter(Registry& registry);

}  // namespace tessera
