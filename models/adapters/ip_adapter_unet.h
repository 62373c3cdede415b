#pragma once
/// IP-Adapter on a UNet2DConditionModel: the attention processor of the cross-attention (attn2) layers (diffusers'
/// IPAdapterAttnProcessor2_0, models/attention_processor.py) and the functions that install / rescale / remove it
/// (diffusers' UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers and set_ip_adapter_scale).
///
///   auto ip = IPAdapterImpl::from_file("ip-adapter_sd15.safetensors");
///   install_ip_adapter(*unet, *ip, /*scale=*/0.6);                    // every attn2 gets an IPAdapterAttnProcessor
///   UNet2DConditionInputs in;
///   in.ip_hidden_states = {ip->image_proj->project(image_embeds)};    // [B, 1, tokens, cross], rows like the text's
///   at::Tensor eps = unet->forward(latents, t, prompt_embeds, in);
///   set_ip_adapter_scale(*unet, 0.0);                                 // the ip branch is skipped: the plain UNet
///   remove_ip_adapters(*unet);                                        // the processors from before the install
///
/// **How the tokens reach the processors.** Per call, through UNet2DConditionInputs::ip_hidden_states → the blocks →
/// Transformer2DModel → BasicTransformerBlock → HookSite::ip_hidden_states of attn2. The processor holds only the
/// weights and scales (set once, like diffusers' processor state), never the tokens: a UNet call without tokens
/// cannot see the tokens of an earlier call, and calls with different images need no processor edits.
///
/// **Layer order.** unet_ip_adapter_layers lists the attn2 layers in diffusers' `unet.attn_processors` order
/// (down_blocks → up_blocks → mid_block; in each block attention by attention, transformer block by transformer
/// block), ids 1, 3, 5, … (see models/adapters/ip_adapter.h). Tessera registers the mid block before the up blocks,
/// so this order is built explicitly, never from named_modules().
#include <memory>
#include <string>
#include <vector>

#include "models/adapters/ip_adapter.h"
#include "models/common/transformer_2d.h"

namespace tessera {

class UNet2DConditionModelImpl;

/// One adapter's term in one cross-attention layer: out += scale · attention(q, to_k_ip(tokens), to_v_ip(tokens)).
struct IPAdapterLayerTerm {
  IPAdapterAttentionWeights weights;  ///< to_k_ip / to_v_ip, Linear weights [hidden, cross] without bias
  double scale = 1.0;                 ///< 0: the term is skipped (not computed)
};

/// diffusers' IPAdapterAttnProcessor2_0 without masks (ip_adapter_masks are not supported):
///   out = to_out(attention(q, to_k(text), to_v(text)) + Σ_i scale_i · attention(q, to_k_ip_i(ip_i), to_v_ip_i(ip_i)))
/// with q = to_q(x), the layer's heads and softmax scale, no mask on the ip terms; ip_i = HookSite::ip_hidden_states[i]
/// ([B, tokens, cross], one per term, same order). The text attention is AttnProcessor2_0's (multi_head_attention,
/// attention_mask honoured), so with every scale 0 the output is bit-identical to AttnProcessor2_0's.
/// Layer hooks are not applied (as AttnProcessor2_0, which applies them to self-attention only).
class IPAdapterAttnProcessor : public AttentionProcessor {
 public:
  /// `layer`: the module path (for errors); `ip_id`: the file's id of this layer; `previous`: the processor replaced
  /// by the install (restored by remove_ip_adapters; null = a fresh AttnProcessor2_0).
  IPAdapterAttnProcessor(std::string layer, int64_t ip_id, std::vector<IPAdapterLayerTerm> terms,
                         std::shared_ptr<AttentionProcessor> previous = nullptr,
                         AttentionBackend backend = AttentionBackend::Auto);
  std::string name() const override { return "IPAdapterAttnProcessor2_0"; }
  /// A call without tokens (hooks.ip_hidden_states null) is AttnProcessor2_0's: the adapters stay installed and
  /// apply to the calls that bring tokens. ExecutionError naming the layer when encoder_hidden_states is undefined,
  /// or when the call's tokens are not one tensor per term, or their batch or width do not fit.
  at::Tensor forward(AttentionImpl& attn, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& attention_mask, const HookSite& hooks) override;

  const std::string& layer() const { return layer_; }
  int64_t ip_id() const { return ip_id_; }
  std::vector<IPAdapterLayerTerm>& terms() { return terms_; }
  const std::vector<IPAdapterLayerTerm>& terms() const { return terms_; }
  const std::shared_ptr<AttentionProcessor>& previous() const { return previous_; }

 private:
  std::string layer_;
  int64_t ip_id_;
  std::vector<IPAdapterLayerTerm> terms_;
  std::shared_ptr<AttentionProcessor> previous_;
  AttentionBackend backend_;
};

/// A UNet cross-attention (attn2) layer with its ip id.
struct UNetIPAdapterLayer {
  std::string path;   ///< "down_blocks.1.attentions.0.transformer_blocks.0.attn2" (diffusers' processor name
                      ///< without ".processor")
  int64_t ip_id = 0;  ///< 1, 3, 5, …
  AttentionImpl* attn = nullptr;
};

/// The UNet's attn2 layers in diffusers' attn_processors order with ids 1, 3, 5, … (see the top of this file).
/// Every attn2 counts, as in diffusers (Tessera's UNets build attn2 as cross-attention only).
std::vector<UNetIPAdapterLayer> unet_ip_adapter_layers(UNet2DConditionModelImpl& unet);

/// One adapter to install and its scale (diffusers' load_ip_adapter + set_ip_adapter_scale(scale)).
struct IPAdapterUse {
  const IPAdapterImpl* adapter = nullptr;
  double scale = 1.0;
};

/// Sets an IPAdapterAttnProcessor on every attn2 layer of `unet` with one term per adapter (in the order given,
/// which is the order of UNet2DConditionInputs::ip_hidden_states), the weights of the layer's id converted to the
/// layer's dtype and device. Installing again replaces the earlier IP processors (the processor from before the
/// first install is kept for remove_ip_adapters). Nothing changes when it throws. ModelLoadError naming the adapter's
/// file when: an adapter is null or `adapters` is empty; the file's layer count is not the UNet's (naming the first
/// layer without weights, or the first id without a layer and the UNet's last layer); a layer's to_k_ip / to_v_ip
/// shape is not that layer's [hidden, cross] (naming the layer path and the id). Returns the number of layers.
int install_ip_adapters(UNet2DConditionModelImpl& unet, const std::vector<IPAdapterUse>& adapters);
/// install_ip_adapters with one adapter.
int install_ip_adapter(UNet2DConditionModelImpl& unet, const IPAdapterImpl& adapter, double scale = 1.0);

/// Sets the scale of every adapter in every IP processor (diffusers' set_ip_adapter_scale(float)); returns the
/// number of layers changed (0 when none is installed).
int set_ip_adapter_scale(UNet2DConditionModelImpl& unet, double scale);
/// One scale per installed adapter (diffusers' set_ip_adapter_scale([s0, s1, …]); a single value applies to all).
/// ValidationError when the count fits neither. Per-block scale dicts ({"down": {"block_1": [...]}}) are not
/// supported yet.
int set_ip_adapter_scales(UNet2DConditionModelImpl& unet, const std::vector<double>& scales);

/// Restores the processors the install replaced (AttnProcessor2_0 when there was none) on every layer with an
/// IPAdapterAttnProcessor (diffusers' unload_ip_adapter, UNet side); returns how many were restored.
int remove_ip_adapters(UNet2DConditionModelImpl& unet);

}  // namespace tessera
