#include "models/adapters/ip_adapter_unet.h"

#include <torch/torch.h>

#include <algorithm>

#include "tessera/error.h"
#include "models/unet/unet_2d_blocks.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera {

// ---- processor ----

IPAdapterAttnProcessor::IPAdapterAttnProcessor(std::string layer, int64_t ip_id, std::vector<IPAdapterLayerTerm> terms,
                                               std::shared_ptr<AttentionProcessor> previous, AttentionBackend backend)
    : layer_(std::move(layer)), ip_id_(ip_id), terms_(std::move(terms)), previous_(std::move(previous)),
      backend_(backend) {}

at::Tensor IPAdapterAttnProcessor::forward(AttentionImpl& attn, const at::Tensor& hidden_states,
                                           const at::Tensor& encoder_hidden_states, const at::Tensor& attention_mask,
                                           const HookSite& hooks) {
  if (!encoder_hidden_states.defined())
    throw ExecutionError(name() + " at " + layer_ + " is a cross-attention processor; it got no encoder_hidden_states");
  // The text attention, exactly as AttnProcessor2_0 computes it (so that scale 0 is the plain UNet bit for bit).
  const at::Tensor query = attn.to_q(hidden_states);         // [B, N, inner]
  const at::Tensor key = attn.to_k(encoder_hidden_states);   // [B, M, inner]
  const at::Tensor value = attn.to_v(encoder_hidden_states); // [B, M, inner]
  at::Tensor out = multi_head_attention(attn, query, key, value, attention_mask, backend_);  // [B, N, inner]

  // A call without IP tokens is a call of the plain UNet (the adapters stay installed for the calls that bring
  // tokens); a call with tokens must bring one tensor per adapter.
  const std::vector<at::Tensor>* ip = hooks.ip_hidden_states;
  const bool any_active = std::any_of(terms_.begin(), terms_.end(), [](const auto& t) { return t.scale != 0.0; });
  if (any_active && ip) {
    if (ip->size() != terms_.size())
      throw ExecutionError(name() + " at " + layer_ + ": " + std::to_string(terms_.size()) +
                           " IP-Adapter(s) installed, the call gave " + std::to_string(ip->size()) +
                           " ip_hidden_states (UNet2DConditionInputs::ip_hidden_states, one per adapter)");
    for (size_t i = 0; i < terms_.size(); ++i) {
      const IPAdapterLayerTerm& term = terms_[i];
      if (term.scale == 0.0) continue;  // diffusers skips the term entirely
      const at::Tensor& tokens = (*ip)[i];  // [B, T, cross] (the UNet flattened [B, n, T, cross])
      if (tokens.dim() != 3 || tokens.size(0) != hidden_states.size(0) ||
          tokens.size(2) != term.weights.to_k_ip.size(1))
        throw ExecutionError(name() + " at " + layer_ + ": ip_hidden_states[" + std::to_string(i) + "] must be [" +
                             std::to_string(hidden_states.size(0)) + ", tokens, " +
                             std::to_string(term.weights.to_k_ip.size(1)) + "], got " + c10::str(tokens.sizes()));
      // The weights were converted to the layer's dtype/device at install; .to() is a no-op unless the UNet moved
      // since (then it converts on every call: reinstall after moving the UNet to avoid that).
      const at::Tensor w_k = term.weights.to_k_ip.to(query.options());
      const at::Tensor w_v = term.weights.to_v_ip.to(query.options());
      const at::Tensor t = tokens.to(query.options());
      const at::Tensor ip_key = at::linear(t, w_k);    // [B, T, inner]
      const at::Tensor ip_value = at::linear(t, w_v);  // [B, T, inner]
      // No mask on the ip term (diffusers passes attn_mask=None); same heads and softmax scale as the text term.
      out = out + term.scale * multi_head_attention(attn, query, ip_key, ip_value, {}, backend_);
    }
  }
  return attn.out_projection(out);  // to_out.0; to_out.1 (dropout) is the identity at inference
}

// ---- layers of a UNet ----

namespace {

void add_transformer_layers(torch::nn::ModuleList& attentions, const std::string& block_path,
                            std::vector<UNetIPAdapterLayer>& out) {
  for (size_t j = 0; j < attentions->size(); ++j) {
    auto* t = attentions[j]->as<Transformer2DModelImpl>();
    if (!t) continue;
    for (size_t k = 0; k < t->transformer_blocks->size(); ++k) {
      auto* b = t->transformer_blocks[k]->as<BasicTransformerBlockImpl>();
      if (!b || !b->attn2) continue;
      UNetIPAdapterLayer layer;
      layer.path = block_path + ".attentions." + std::to_string(j) + ".transformer_blocks." + std::to_string(k) +
                   ".attn2";
      layer.ip_id = 2 * static_cast<int64_t>(out.size()) + 1;
      layer.attn = b->attn2.get();
      out.push_back(std::move(layer));
    }
  }
}

[[noreturn]] void fail(const std::string& file, const std::string& message) {
  throw ModelLoadError("IP-Adapter file '" + file + "': " + message, SourceLoc{file});
}

std::string id_range(size_t count) {
  return count == 0 ? std::string("none") : "ids 1.." + std::to_string(2 * count - 1);
}

}  // namespace

std::vector<UNetIPAdapterLayer> unet_ip_adapter_layers(UNet2DConditionModelImpl& unet) {
  std::vector<UNetIPAdapterLayer> out;
  // diffusers' order: down_blocks, up_blocks, then mid_block (UNet2DConditionModel assigns mid_block after it has
  // registered the up_blocks ModuleList, and attn_processors walks named_children in registration order).
  for (size_t i = 0; i < unet.down_blocks->size(); ++i)
    if (auto* b = unet.down_blocks[i]->as<CrossAttnDownBlock2DImpl>())
      add_transformer_layers(b->attentions, "down_blocks." + std::to_string(i), out);
  for (size_t i = 0; i < unet.up_blocks->size(); ++i)
    if (auto* b = unet.up_blocks[i]->as<CrossAttnUpBlock2DImpl>())
      add_transformer_layers(b->attentions, "up_blocks." + std::to_string(i), out);
  if (unet.mid_block)
    if (auto* m = unet.mid_block->as<UNetMidBlock2DCrossAttnImpl>())
      add_transformer_layers(m->attentions, "mid_block", out);
  return out;
}

// ---- install / scale / remove ----

int install_ip_adapters(UNet2DConditionModelImpl& unet, const std::vector<IPAdapterUse>& adapters) {
  if (adapters.empty()) throw ModelLoadError("install_ip_adapters: no adapter given");
  const std::vector<UNetIPAdapterLayer> layers = unet_ip_adapter_layers(unet);
  if (layers.empty()) throw ModelLoadError("install_ip_adapters: the UNet has no cross-attention layers");

  // Check everything first, so that a failure leaves the UNet as it was.
  for (size_t a = 0; a < adapters.size(); ++a) {
    const IPAdapterImpl* adapter = adapters[a].adapter;
    if (!adapter) throw ModelLoadError("install_ip_adapters: adapter " + std::to_string(a) + " is null");
    const std::string& file = adapter->file;
    const size_t n_file = adapter->layers.size();
    if (n_file != layers.size()) {
      // The loader guarantees ids 1, 3, … without gaps, so the count decides which side lacks a partner.
      if (n_file < layers.size()) {
        const UNetIPAdapterLayer& first_missing = layers[n_file];
        fail(file, "has " + std::to_string(n_file) + " cross-attention layers (" + id_range(n_file) + "), the UNet has " +
                       std::to_string(layers.size()) + " (" + id_range(layers.size()) + "): UNet layer " +
                       first_missing.path + " (ip id " + std::to_string(first_missing.ip_id) +
                       ") has no ip_adapter." + std::to_string(first_missing.ip_id) +
                       " weights (an adapter for another base model?)");
      }
      const int64_t first_extra = 2 * static_cast<int64_t>(layers.size()) + 1;
      fail(file, "has " + std::to_string(n_file) + " cross-attention layers (" + id_range(n_file) + "), the UNet has " +
                     std::to_string(layers.size()) + " (" + id_range(layers.size()) + ", the last is " +
                     layers.back().path + "): ip_adapter." + std::to_string(first_extra) +
                     " has no UNet layer (an adapter for another base model?)");
    }
    for (const UNetIPAdapterLayer& l : layers) {
      auto it = adapter->layers.find(l.ip_id);
      if (it == adapter->layers.end())  // cannot happen after the count check with gap-free ids; kept for safety
        fail(file, "no ip_adapter." + std::to_string(l.ip_id) + " weights for UNet layer " + l.path);
      if (!l.attn->is_cross_attention())
        fail(file, "UNet layer " + l.path + " (ip id " + std::to_string(l.ip_id) + ") is not a cross-attention");
      const at::IntArrayRef expected = l.attn->to_k->weight.sizes();  // [hidden (inner), cross]
      for (const auto& [suffix, w] : {std::pair<const char*, const at::Tensor*>{"to_k_ip", &it->second.to_k_ip},
                                      {"to_v_ip", &it->second.to_v_ip}})
        if (!w->defined() || w->sizes() != expected)
          fail(file, "ip_adapter." + std::to_string(l.ip_id) + "." + suffix + ".weight is " +
                         (w->defined() ? c10::str(w->sizes()) : std::string("missing")) + ", UNet layer " + l.path +
                         " (ip id " + std::to_string(l.ip_id) + ") needs " + c10::str(expected) +
                         " ([hidden, cross_attention_dim])");
    }
  }

  for (const UNetIPAdapterLayer& l : layers) {
    std::vector<IPAdapterLayerTerm> terms;
    terms.reserve(adapters.size());
    const auto options = l.attn->to_k->weight.options();
    for (const IPAdapterUse& use : adapters) {
      const IPAdapterAttentionWeights& w = use.adapter->layers.at(l.ip_id);
      terms.push_back({{w.to_k_ip.to(options).contiguous(), w.to_v_ip.to(options).contiguous()}, use.scale});
    }
    std::shared_ptr<AttentionProcessor> previous = l.attn->processor();
    if (auto* existing = dynamic_cast<IPAdapterAttnProcessor*>(previous.get())) previous = existing->previous();
    // The backend of the processor being replaced is private to it; the IP processor uses Auto (the process-wide
    // default). TODO(next session): carry a non-default backend over if that ever matters.
    l.attn->set_processor(std::make_shared<IPAdapterAttnProcessor>(l.path, l.ip_id, std::move(terms), previous));
  }
  return static_cast<int>(layers.size());
}

int install_ip_adapter(UNet2DConditionModelImpl& unet, const IPAdapterImpl& adapter, double scale) {
  return install_ip_adapters(unet, {IPAdapterUse{&adapter, scale}});
}

int set_ip_adapter_scales(UNet2DConditionModelImpl& unet, const std::vector<double>& scales) {
  if (scales.empty()) throw ValidationError("set_ip_adapter_scales: no scale given");
  // Validate on every layer before changing any.
  std::vector<IPAdapterAttnProcessor*> procs;
  for (const UNetIPAdapterLayer& l : unet_ip_adapter_layers(unet))
    if (auto* p = dynamic_cast<IPAdapterAttnProcessor*>(l.attn->processor().get())) {
      if (scales.size() != 1 && scales.size() != p->terms().size())
        throw ValidationError("set_ip_adapter_scales: " + std::to_string(scales.size()) + " scales for " +
                              std::to_string(p->terms().size()) + " installed IP-Adapter(s) at " + l.path);
      procs.push_back(p);
    }
  for (IPAdapterAttnProcessor* p : procs)
    for (size_t i = 0; i < p->terms().size(); ++i) p->terms()[i].scale = scales.size() == 1 ? scales[0] : scales[i];
  return static_cast<int>(procs.size());
}

int set_ip_adapter_scale(UNet2DConditionModelImpl& unet, double scale) { return set_ip_adapter_scales(unet, {scale}); }

int remove_ip_adapters(UNet2DConditionModelImpl& unet) {
  int count = 0;
  for (const UNetIPAdapterLayer& l : unet_ip_adapter_layers(unet))
    if (auto* p = dynamic_cast<IPAdapterAttnProcessor*>(l.attn->processor().get())) {
      std::shared_ptr<AttentionProcessor> previous = p->previous();
      l.attn->set_processor(previous ? std::move(previous) : std::make_shared<AttnProcessor2_0>());
      ++count;
    }
  return count;
}

}  // namespace tessera
