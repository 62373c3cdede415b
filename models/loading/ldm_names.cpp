#include "models/loading/ldm_names.h"

#include <stdexcept>

#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

void NameTable::add(const std::string& diffusers, const std::string& ldm) {
  auto a = to_ldm_.emplace(diffusers, ldm);
  auto b = to_diffusers_.emplace(ldm, diffusers);
  if ((!a.second && a.first->second != ldm) || (!b.second && b.first->second != diffusers))
    throw std::logic_error("name table: conflicting entries for " + diffusers + " <-> " + ldm);
}

std::optional<std::string> NameTable::map_key(const std::map<std::string, std::string>& table, const std::string& key) {
  std::string prefix = key;
  while (true) {
    auto it = table.find(prefix);
    if (it != table.end()) return it->second + key.substr(prefix.size());
    const auto dot = prefix.rfind('.');
    if (dot == std::string::npos) return std::nullopt;
    prefix.resize(dot);
  }
}

std::optional<std::string> NameTable::to_diffusers(const std::string& ldm_key) const {
  return map_key(to_diffusers_, ldm_key);
}

std::optional<std::string> NameTable::to_ldm(const std::string& diffusers_key) const {
  return map_key(to_ldm_, diffusers_key);
}

namespace {

std::string idx(int64_t i) { return std::to_string(i); }

/// A UNet ResnetBlock2D: diffusers `d` is LDM `l` (the ResBlock), inner layers renamed.
void add_unet_resnet(NameTable& t, const std::string& d, const std::string& l) {
  t.add(d, l);
  t.add(d + ".norm1", l + ".in_layers.0");
  t.add(d + ".conv1", l + ".in_layers.2");
  t.add(d + ".time_emb_proj", l + ".emb_layers.1");
  t.add(d + ".norm2", l + ".out_layers.0");
  t.add(d + ".conv2", l + ".out_layers.3");
  t.add(d + ".conv_shortcut", l + ".skip_connection");
}

bool has_attention(const std::string& block_type) { return block_type.rfind("CrossAttn", 0) == 0; }

}  // namespace

NameTable unet_name_table(const UNet2DConditionModelConfig& c) {
  NameTable t;
  t.add("conv_in", "input_blocks.0.0");
  t.add("time_embedding.linear_1", "time_embed.0");
  t.add("time_embedding.linear_2", "time_embed.2");
  t.add("add_embedding.linear_1", "label_emb.0.0");  // SDXL (addition_embed_type text_time)
  t.add("add_embedding.linear_2", "label_emb.0.2");
  t.add("conv_norm_out", "out.0");
  t.add("conv_out", "out.2");

  const int64_t n = static_cast<int64_t>(c.down_block_types.size());
  // input_blocks: each down block's layers, then its downsampler (every block but the last) as one more index.
  int64_t i = 1;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t layers = b < static_cast<int64_t>(c.layers_per_block.size()) ? c.layers_per_block[b] : 2;
    const std::string d = "down_blocks." + idx(b);
    for (int64_t l = 0; l < layers; ++l, ++i) {
      add_unet_resnet(t, d + ".resnets." + idx(l), "input_blocks." + idx(i) + ".0");
      if (has_attention(c.down_block_types[b])) t.add(d + ".attentions." + idx(l), "input_blocks." + idx(i) + ".1");
    }
    if (b != n - 1) t.add(d + ".downsamplers.0.conv", "input_blocks." + idx(i++) + ".0.op");
  }

  if (c.mid_block_type) {
    add_unet_resnet(t, "mid_block.resnets.0", "middle_block.0");
    t.add("mid_block.attentions.0", "middle_block.1");
    add_unet_resnet(t, "mid_block.resnets.1", "middle_block.2");
  }

  // output_blocks: layers_per_block + 1 per up block; the upsampler sits in the block's last output block,
  // after the resnet (and the attention when the block has one).
  int64_t o = 0;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t down = n - 1 - b;
    const int64_t layers = (down < static_cast<int64_t>(c.layers_per_block.size()) ? c.layers_per_block[down] : 2) + 1;
    const std::string d = "up_blocks." + idx(b);
    const bool attn = has_attention(c.up_block_types[b]);
    for (int64_t l = 0; l < layers; ++l, ++o) {
      add_unet_resnet(t, d + ".resnets." + idx(l), "output_blocks." + idx(o) + ".0");
      if (attn) t.add(d + ".attentions." + idx(l), "output_blocks." + idx(o) + ".1");
      if (l == layers - 1 && b != n - 1)
        t.add(d + ".upsamplers.0.conv", "output_blocks." + idx(o) + "." + (attn ? "2" : "1") + ".conv");
    }
  }
  return t;
}

NameTable controlnet_name_table(const UNet2DConditionModelConfig& c, size_t conditioning_levels) {
  NameTable t;
  UNet2DConditionModelConfig encoder = c;  // a ControlNet config has no up blocks: give the table plain ones
  encoder.up_block_types.assign(c.down_block_types.size(), "UpBlock2D");
  const NameTable unet = unet_name_table(encoder);
  for (const auto& [diffusers, ldm] : unet.pairs())
    if (diffusers.rfind("up_blocks.", 0) != 0 && diffusers != "conv_norm_out" && diffusers != "conv_out")
      t.add(diffusers, ldm);
  // input_hint_block: conv_in, then per level but the last a 3x3 and a stride-2 3x3 conv, then conv_out.
  int64_t hint = 0;
  t.add("controlnet_cond_embedding.conv_in", "input_hint_block." + idx(hint));
  const int64_t blocks = 2 * (static_cast<int64_t>(conditioning_levels) - 1);
  for (int64_t k = 0; k < blocks; ++k)
    t.add("controlnet_cond_embedding.blocks." + idx(k), "input_hint_block." + idx(hint += 2));
  t.add("controlnet_cond_embedding.conv_out", "input_hint_block." + idx(hint + 2));
  // One zero conv per skip of the down blocks: input_blocks 0 … last.
  int64_t skips = 1;
  for (size_t b = 0; b < c.down_block_types.size(); ++b)
    skips += (b < c.layers_per_block.size() ? c.layers_per_block[b] : 2) + (b + 1 < c.down_block_types.size() ? 1 : 0);
  for (int64_t i = 0; i < skips; ++i) t.add("controlnet_down_blocks." + idx(i), "zero_convs." + idx(i) + ".0");
  t.add("controlnet_mid_block", "middle_block_out.0");
  return t;
}

namespace {

/// A VAE ResnetBlock2D: the same inner names on both sides but the shortcut.
void add_vae_resnet(NameTable& t, const std::string& d, const std::string& l) {
  t.add(d, l);
  t.add(d + ".conv_shortcut", l + ".nin_shortcut");
}

void add_vae_mid(NameTable& t, const std::string& side) {
  add_vae_resnet(t, side + ".mid_block.resnets.0", side + ".mid.block_1");
  add_vae_resnet(t, side + ".mid_block.resnets.1", side + ".mid.block_2");
  const std::string d = side + ".mid_block.attentions.0", l = side + ".mid.attn_1";
  t.add(d + ".group_norm", l + ".norm");
  t.add(d + ".to_q", l + ".q");
  t.add(d + ".to_k", l + ".k");
  t.add(d + ".to_v", l + ".v");
  t.add(d + ".to_out.0", l + ".proj_out");
}

}  // namespace

NameTable vae_name_table(const AutoencoderKLConfig& c) {
  NameTable t;
  for (const char* same : {"quant_conv", "post_quant_conv", "encoder.conv_in", "encoder.conv_out", "decoder.conv_in",
                           "decoder.conv_out"})
    t.add(same, same);
  t.add("encoder.conv_norm_out", "encoder.norm_out");
  t.add("decoder.conv_norm_out", "decoder.norm_out");
  const int64_t n = static_cast<int64_t>(c.block_out_channels.size());
  for (int64_t b = 0; b < n; ++b) {
    const std::string d = "encoder.down_blocks." + idx(b), l = "encoder.down." + idx(b);
    for (int64_t r = 0; r < c.layers_per_block; ++r) add_vae_resnet(t, d + ".resnets." + idx(r), l + ".block." + idx(r));
    if (b != n - 1) t.add(d + ".downsamplers.0.conv", l + ".downsample.conv");
  }
  for (int64_t b = 0; b < n; ++b) {
    // diffusers' decoder up_blocks run from the deepest level; LDM numbers `up` by resolution (reversed).
    const std::string d = "decoder.up_blocks." + idx(b), l = "decoder.up." + idx(n - 1 - b);
    for (int64_t r = 0; r < c.layers_per_block + 1; ++r)
      add_vae_resnet(t, d + ".resnets." + idx(r), l + ".block." + idx(r));
    if (b != n - 1) t.add(d + ".upsamplers.0.conv", l + ".upsample.conv");
  }
  add_vae_mid(t, "encoder");
  add_vae_mid(t, "decoder");
  return t;
}

}  // namespace tessera
