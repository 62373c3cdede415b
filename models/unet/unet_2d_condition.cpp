#include "models/unet/unet_2d_condition.h"

#include <algorithm>
#include <regex>
#include <set>

#include <torch/torch.h>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/common/precision.h"
#include "models/common/resnet.h"
#include "models/common/transformer_2d.h"
#include "models/loading/component_factory.h"
#include "models/loading/skip_init.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"
#include "models/unet/unet_2d_blocks.h"
#include "models/unet/unet_stages.h"

namespace tessera {

// ---- config ----

UNet2DConditionModelConfig UNet2DConditionModelConfig::from_config(ModelConfig& c) {
  UNet2DConditionModelConfig u;
  u.sample_size = c.get_optional_int("sample_size");
  u.in_channels = c.get_int("in_channels", 4);
  u.out_channels = c.get_int("out_channels", 4);
  u.center_input_sample = c.get_bool("center_input_sample", false);
  u.flip_sin_to_cos = c.get_bool("flip_sin_to_cos", true);
  u.freq_shift = c.get_float("freq_shift", 0.0);
  u.down_block_types = c.get_string_list("down_block_types", u.down_block_types);
  // null means "no mid block" (not the default)
  if (c.json().contains("mid_block_type")) u.mid_block_type = c.get_optional_string("mid_block_type");
  u.up_block_types = c.get_string_list("up_block_types", u.up_block_types);
  u.block_out_channels = c.get_int_list("block_out_channels", u.block_out_channels);
  const size_t n = u.down_block_types.size();
  if (u.block_out_channels.size() != n)
    c.fail("block_out_channels", "must have one entry per down block (" + std::to_string(n) + ")");
  if (u.up_block_types.size() != n) c.fail("up_block_types", "must have as many entries as down_block_types");
  for (const auto& t : u.down_block_types)
    if (t != "DownBlock2D" && t != "CrossAttnDownBlock2D") c.fail("down_block_types", "block type '" + t + "' is not supported");
  for (const auto& t : u.up_block_types)
    if (t != "UpBlock2D" && t != "CrossAttnUpBlock2D") c.fail("up_block_types", "block type '" + t + "' is not supported");
  if (u.mid_block_type && *u.mid_block_type != "UNetMidBlock2DCrossAttn")
    c.fail("mid_block_type", "'" + *u.mid_block_type + "' is not supported (UNetMidBlock2DCrossAttn or null)");

  // only_cross_attention: bool or one bool per block.
  u.only_cross_attention.assign(n, false);
  if (c.has("only_cross_attention")) {
    const nlohmann::json& j = c.json()["only_cross_attention"];
    c.accept("only_cross_attention");
    if (j.is_boolean()) u.only_cross_attention.assign(n, j.get<bool>());
    else if (j.is_array() && j.size() == n && std::all_of(j.begin(), j.end(), [](auto& e) { return e.is_boolean(); }))
      for (size_t i = 0; i < n; ++i) u.only_cross_attention[i] = j[i].get<bool>();
    else c.fail("only_cross_attention", "expected a bool or one bool per down block");
  }
  u.layers_per_block = c.get_int_or_list("layers_per_block", 2, n);
  u.downsample_padding = c.get_int("downsample_padding", 1);
  u.mid_block_scale_factor = c.get_float("mid_block_scale_factor", 1.0);
  u.act_fn = c.get_string("act_fn", "silu");
  check_activation(u.act_fn);
  if (!c.has("norm_num_groups") && c.json().contains("norm_num_groups"))
    c.fail("norm_num_groups", "null (no output norm) is not supported");
  u.norm_num_groups = c.get_int("norm_num_groups", 32);
  u.norm_eps = c.get_float("norm_eps", 1e-5);
  u.cross_attention_dim = c.get_int_or_list("cross_attention_dim", 1280, n);
  if (c.has("transformer_layers_per_block") && c.json()["transformer_layers_per_block"].is_array())
    for (const auto& e : c.json()["transformer_layers_per_block"])
      if (e.is_array()) c.fail("transformer_layers_per_block", "nested lists are not supported");
  u.transformer_layers_per_block = c.get_int_or_list("transformer_layers_per_block", 1, n);
  if (c.has("reverse_transformer_layers_per_block")) {
    for (const auto& e : c.json()["reverse_transformer_layers_per_block"])
      if (e.is_array()) c.fail("reverse_transformer_layers_per_block", "nested lists are not supported");
    u.reverse_transformer_layers_per_block = c.get_int_or_list("reverse_transformer_layers_per_block", 1, n);
  }
  if (c.has("num_attention_heads"))
    c.fail("num_attention_heads", "is not supported by UNet2DConditionModel (diffusers rejects it too); "
                                  "set attention_head_dim, which diffusers uses as the head count");
  u.attention_head_dim = c.get_int_or_list("attention_head_dim", 8, n);
  for (size_t i = 0; i < n; ++i)
    if (u.attention_head_dim[i] <= 0 || u.block_out_channels[i] % u.attention_head_dim[i] != 0)
      c.fail("attention_head_dim", "head count " + std::to_string(u.attention_head_dim[i]) + " does not divide " +
                                       std::to_string(u.block_out_channels[i]) + " channels");
  u.use_linear_projection = c.get_bool("use_linear_projection", false);
  u.upcast_attention = c.get_bool("upcast_attention", false);
  u.resnet_time_scale_shift = c.get_choice("resnet_time_scale_shift", "default", {"default", "scale_shift"});
  u.addition_embed_type = c.get_optional_string("addition_embed_type");
  if (u.addition_embed_type && *u.addition_embed_type != "text_time")
    c.fail("addition_embed_type", "'" + *u.addition_embed_type + "' is not supported (null or text_time)");
  u.addition_time_embed_dim = c.get_optional_int("addition_time_embed_dim");
  u.projection_class_embeddings_input_dim = c.get_optional_int("projection_class_embeddings_input_dim");
  if (u.addition_embed_type && (!u.addition_time_embed_dim || !u.projection_class_embeddings_input_dim))
    c.fail("addition_embed_type", "text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim");
  u.time_embedding_dim = c.get_optional_int("time_embedding_dim");
  u.time_embedding_act_fn = c.get_optional_string("time_embedding_act_fn");
  if (u.time_embedding_act_fn) check_activation(*u.time_embedding_act_fn);
  u.timestep_post_act = c.get_optional_string("timestep_post_act");
  if (u.timestep_post_act) check_activation(*u.timestep_post_act);
  u.time_cond_proj_dim = c.get_optional_int("time_cond_proj_dim");
  u.conv_in_kernel = c.get_int("conv_in_kernel", 3);
  u.conv_out_kernel = c.get_int("conv_out_kernel", 3);
  c.get_choice("time_embedding_type", "positional", {"positional"});
  c.get_choice("attention_type", "default", {"default"});
  // Features of other UNet variants: accepted only at their "off" values.
  for (const char* f : {"class_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "num_class_embeds",
                        "cross_attention_norm"}) {
    if (c.has(f)) c.fail(f, "is not supported (must be null)");
    c.accept(f);
  }
  if (c.get_bool("dual_cross_attention", false)) c.fail("dual_cross_attention", "is not supported");
  if (c.get_bool("class_embeddings_concat", false)) c.fail("class_embeddings_concat", "is not supported");
  c.get_float("dropout", 0.0);  // dropout is the identity at inference
  // Used only by block types not supported here (SimpleCrossAttn, ResnetDownsample); accepted for compatibility.
  for (const char* f : {"num_attention_heads", "reverse_transformer_layers_per_block", "resnet_skip_time_act", "resnet_out_scale_factor", "mid_block_only_cross_attention",
                        "addition_embed_type_num_heads"})
    c.accept(f);
  c.finish();
  return u;
}

UNet2DConditionModelConfig UNet2DConditionModelConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ModelConfig c(json, source);
  return from_config(c);
}

// ---- model ----

UNetBlockOptions unet_block_options(const UNet2DConditionModelConfig& c, int64_t in, int64_t out, int64_t temb) {
  return UNetBlockOptions(in, out, temb)
      .resnet_eps(c.norm_eps)
      .resnet_act_fn(c.act_fn)
      .resnet_groups(c.norm_num_groups)
      .resnet_time_scale_shift(c.resnet_time_scale_shift)
      .downsample_padding(c.downsample_padding)
      .use_linear_projection(c.use_linear_projection)
      .upcast_attention(c.upcast_attention);
}

namespace {
UNetBlockOptions block_options(const UNet2DConditionModelConfig& c, int64_t in, int64_t out, int64_t temb) {
  return unet_block_options(c, in, out, temb);
}
}  // namespace

UNet2DConditionModelImpl::UNet2DConditionModelImpl(UNet2DConditionModelConfig config_) : config(std::move(config_)) {
  const auto& c = config;
  const int64_t n = static_cast<int64_t>(c.block_out_channels.size());
  const int64_t time_embed_dim = unet_stages::time_embed_dim(c);
  conv_in = register_module("conv_in", unet_stages::conv_in(c));
  time_proj = register_module("time_proj", unet_stages::time_proj(c));
  time_embedding = register_module("time_embedding", unet_stages::time_embedding(c));
  if (c.addition_embed_type) {  // "text_time" (SDXL)
    add_time_proj = register_module("add_time_proj", unet_stages::add_time_proj(c));
    add_embedding = register_module("add_embedding", unet_stages::add_embedding(c));
  }

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t output_channel = c.block_out_channels[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = c.block_out_channels[i];
    down_blocks->push_back(unet_stages::down_block(c, i, input_channel, output_channel));
  }

  if (c.mid_block_type) mid_block = register_module("mid_block", unet_stages::mid_block(c).ptr());

  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  std::vector<int64_t> rev_channels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int64_t> rev_heads(c.attention_head_dim.rbegin(), c.attention_head_dim.rend());
  std::vector<int64_t> rev_layers(c.layers_per_block.rbegin(), c.layers_per_block.rend());
  std::vector<int64_t> rev_cross(c.cross_attention_dim.rbegin(), c.cross_attention_dim.rend());
  std::vector<int64_t> rev_transformer = c.reverse_transformer_layers_per_block.empty()
                                             ? std::vector<int64_t>(c.transformer_layers_per_block.rbegin(),
                                                                    c.transformer_layers_per_block.rend())
                                             : c.reverse_transformer_layers_per_block;
  std::vector<bool> rev_only_cross(c.only_cross_attention.rbegin(), c.only_cross_attention.rend());
  output_channel = rev_channels[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t prev_output_channel = output_channel;
    output_channel = rev_channels[i];
    const int64_t input_channel = rev_channels[std::min(i + 1, n - 1)];
    UNetBlockOptions o = block_options(c, input_channel, output_channel, time_embed_dim)
                             .prev_output_channel(prev_output_channel)
                             .num_layers(rev_layers[i] + 1)
                             .transformer_layers_per_block(rev_transformer[i])
                             .add_upsample(i != n - 1)
                             .num_attention_heads(rev_heads[i])
                             .cross_attention_dim(rev_cross[i])
                             .only_cross_attention(rev_only_cross[i]);
    if (c.up_block_types[i] == "CrossAttnUpBlock2D") up_blocks->push_back(CrossAttnUpBlock2D(o));
    else up_blocks->push_back(UpBlock2D(o));
  }

  conv_norm_out = register_module("conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(
                                                                            c.norm_num_groups, c.block_out_channels[0])
                                                                            .eps(c.norm_eps)));
  conv_out = register_module("conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.block_out_channels[0], c.out_channels,
                                                                                    c.conv_out_kernel)
                                                               .padding((c.conv_out_kernel - 1) / 2)));

  // Layer-hook names: every Transformer2DModel learns its stack's path; the mid block's is the "auto" stack.
  for (auto& item : named_modules("", /*include_self=*/false)) {
    if (auto* t = item.value()->as<Transformer2DModelImpl>()) {
      t->stack_fqn = item.key() + ".transformer_blocks";
      t->stack_is_primary = item.key() == "mid_block.attentions.0";
    }
  }
}

std::vector<std::pair<std::string, int64_t>> UNet2DConditionModelImpl::hook_stacks() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& item : named_modules("", false))
    if (const auto* t = item.value()->as<Transformer2DModelImpl>())
      out.emplace_back(t->stack_fqn, static_cast<int64_t>(t->transformer_blocks->size()));
  return out;
}

void UNet2DConditionModelImpl::validate_hooks(const std::vector<LayerHook>& hooks) const {
  if (hooks.empty()) return;
  const auto stacks = hook_stacks();
  for (const LayerHook& h : hooks) {
    std::string fqn = h.layers.fqn;
    if (fqn == "auto") {
      if (!mid_block) throw ValidationError("layer hook fqn 'auto' needs a mid block; name a stack such as '" +
                                            (stacks.empty() ? std::string("?") : stacks[0].first) + "'");
      fqn = "mid_block.attentions.0.transformer_blocks";
    }
    auto it = std::find_if(stacks.begin(), stacks.end(), [&](const auto& s) { return s.first == fqn; });
    if (it == stacks.end()) {
      std::string names;
      for (const auto& s : stacks) names += (names.empty() ? "" : ", ") + s.first;
      throw ValidationError("layer hook fqn '" + h.layers.fqn + "' names no transformer-block stack of this UNet (" +
                            names + ")");
    }
    for (int64_t idx : h.layers.indices)
      if (idx < 0 || idx >= it->second)
        throw ValidationError("layer hook index " + std::to_string(idx) + " is out of range for '" + fqn + "' (" +
                              std::to_string(it->second) + " blocks)");
  }
}

int UNet2DConditionModelImpl::set_attn_processor(const std::string& name_regex,
                                                 const std::function<std::shared_ptr<AttentionProcessor>()>& make) {
  const std::regex re(name_regex);
  int count = 0;
  for (auto& item : named_modules("", false))
    if (auto* a = item.value()->as<AttentionImpl>())
      if (std::regex_search(item.key(), re)) {
        a->set_processor(make());
        ++count;
      }
  return count;
}

size_t UNet2DConditionModelImpl::nbytes() const { return module_nbytes(*this); }

at::Tensor UNet2DConditionModelImpl::time_embed(const at::Tensor& sample, const at::Tensor& timestep,
                                                const UNet2DConditionInputs& inputs) {
  const int64_t batch = sample.size(0);
  at::Tensor timesteps = timestep.to(sample.device());
  if (timesteps.dim() == 0) timesteps = timesteps.unsqueeze(0);
  if (timesteps.dim() != 1 || (timesteps.size(0) != 1 && timesteps.size(0) != batch))
    throw ExecutionError("UNet2DConditionModel: timestep must be a scalar or have one entry per batch element (" +
                         std::to_string(batch) + "), got shape " + c10::str(timestep.sizes()));
  timesteps = timesteps.expand({batch});  // [B]
  at::Tensor t_emb = time_proj(timesteps).to(sample.scalar_type());  // [B, block_out_channels[0]]
  at::Tensor timestep_cond = inputs.timestep_cond.defined() ? inputs.timestep_cond.to(sample.scalar_type()) : at::Tensor();
  if (timestep_cond.defined() && !config.time_cond_proj_dim)
    throw ExecutionError("UNet2DConditionModel: timestep_cond given but the config has no time_cond_proj_dim");
  at::Tensor emb = time_embedding(t_emb, timestep_cond);  // [B, time_embed_dim]

  if (config.addition_embed_type) {  // text_time
    if (!inputs.text_embeds.defined() || !inputs.time_ids.defined())
      throw ExecutionError("UNet2DConditionModel: addition_embed_type 'text_time' needs text_embeds and time_ids");
    at::Tensor time_embeds = add_time_proj(inputs.time_ids.flatten());       // [B*6, addition_time_embed_dim]
    time_embeds = time_embeds.reshape({inputs.text_embeds.size(0), -1});       // [B, 6*addition_time_embed_dim]
    at::Tensor add_embeds =
        at::cat({inputs.text_embeds.to(time_embeds.scalar_type()), time_embeds}, -1).to(emb.scalar_type());  // [B, proj_in_dim]
    emb = emb + add_embedding(add_embeds);
  }
  if (config.time_embedding_act_fn) emb = apply_activation(*config.time_embedding_act_fn, emb);
  return emb;
}

at::Tensor UNet2DConditionModelImpl::forward(const at::Tensor& sample_in, const at::Tensor& timestep,
                                             const at::Tensor& encoder_hidden_states_in,
                                             const UNet2DConditionInputs& inputs) {
  if (sample_in.dim() != 4 || sample_in.size(1) != config.in_channels)
    throw ExecutionError("UNet2DConditionModel: sample must be [B, " + std::to_string(config.in_channels) +
                         ", h, w], got " + c10::str(sample_in.sizes()));
  validate_hooks(inputs.hooks);
  const std::vector<LayerHook>* hooks = inputs.hooks.empty() ? nullptr : &inputs.hooks;

  // Upsampling to the skip's size is needed when h or w is not a multiple of 2^(number of upsamplers).
  const int64_t up_factor = int64_t{1} << (config.block_out_channels.size() - 1);
  const bool forward_upsample_size = sample_in.size(2) % up_factor != 0 || sample_in.size(3) % up_factor != 0;

  // Inputs in the compute dtype (a no-op for float32); the time embedding's sinusoids are computed in float32.
  const at::ScalarType compute_dtype = dtype();
  const at::Tensor sample_c = sample_in.to(compute_dtype);
  const at::Tensor encoder_hidden_states =
      encoder_hidden_states_in.defined() ? encoder_hidden_states_in.to(compute_dtype) : encoder_hidden_states_in;
  at::Tensor emb = time_embed(sample_c, timestep, inputs);  // [B, time_embed_dim]

  // IP-Adapter tokens: [B, n, T, C] → [B, n·T, C] in the compute dtype, handed to every cross-attention layer.
  std::vector<at::Tensor> ip_tokens;
  ip_tokens.reserve(inputs.ip_hidden_states.size());
  for (size_t i = 0; i < inputs.ip_hidden_states.size(); ++i) {
    const at::Tensor& t = inputs.ip_hidden_states[i];
    if (!t.defined() || (t.dim() != 3 && t.dim() != 4) || t.size(0) != sample_in.size(0))
      throw ExecutionError("UNet2DConditionModel: ip_hidden_states[" + std::to_string(i) + "] must be [" +
                           std::to_string(sample_in.size(0)) + ", num_images, tokens, cross] or [" +
                           std::to_string(sample_in.size(0)) + ", tokens, cross] (batched like the sample), got " +
                           (t.defined() ? c10::str(t.sizes()) : std::string("an undefined tensor")));
    at::Tensor flat = t.dim() == 4 ? t.flatten(1, 2) : t;
    ip_tokens.push_back(flat.to(sample_in.device(), compute_dtype));
  }
  const std::vector<at::Tensor>* ip = ip_tokens.empty() ? nullptr : &ip_tokens;

  at::Tensor sample = config.center_input_sample ? sample_c * 2.0 - 1.0 : sample_c;
  sample = conv_in(sample);  // [B, C0, h, w]

  std::vector<at::Tensor> down_block_res_samples{sample};
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    DownBlockOutput out;
    if (auto* b = down_blocks[i]->as<CrossAttnDownBlock2DImpl>()) out = b->forward(sample, emb, encoder_hidden_states, hooks, ip);
    else out = down_blocks[i]->as<DownBlock2DImpl>()->forward(sample, emb);
    sample = out.first;
    for (auto& r : out.second) down_block_res_samples.push_back(std::move(r));
  }

  if (!inputs.down_block_additional_residuals.empty()) {
    // ControlNet: each residual is added to its skip (the mid block still reads the un-added sample).
    if (inputs.down_block_additional_residuals.size() != down_block_res_samples.size())
      throw ExecutionError("UNet2DConditionModel: " + std::to_string(inputs.down_block_additional_residuals.size()) +
                           " down-block residuals given, the UNet has " + std::to_string(down_block_res_samples.size()) +
                           " skip connections");
    for (size_t i = 0; i < down_block_res_samples.size(); ++i)
      down_block_res_samples[i] = down_block_res_samples[i] + inputs.down_block_additional_residuals[i].to(compute_dtype);
  }

  if (mid_block)
    sample = mid_block->as<UNetMidBlock2DCrossAttnImpl>()->forward(sample, emb, encoder_hidden_states, hooks, ip);
  if (inputs.mid_block_additional_residual.defined())
    sample = sample + inputs.mid_block_additional_residual.to(compute_dtype);

  for (size_t i = 0; i < up_blocks->size(); ++i) {
    const bool is_final_block = i + 1 == up_blocks->size();
    auto* cross = up_blocks[i]->as<CrossAttnUpBlock2DImpl>();
    auto* plain = up_blocks[i]->as<UpBlock2DImpl>();
    const size_t num_resnets = cross ? cross->resnets->size() : plain->resnets->size();
    std::vector<at::Tensor> res_samples(down_block_res_samples.end() - static_cast<std::ptrdiff_t>(num_resnets),
                                        down_block_res_samples.end());
    down_block_res_samples.resize(down_block_res_samples.size() - num_resnets);
    std::optional<std::vector<int64_t>> upsample_size;
    if (!is_final_block && forward_upsample_size) upsample_size = down_block_res_samples.back().sizes().slice(2).vec();
    if (cross) sample = cross->forward(sample, std::move(res_samples), emb, encoder_hidden_states, upsample_size, hooks, ip);
    else sample = plain->forward(sample, std::move(res_samples), emb, upsample_size);
  }

  sample = group_norm_fp32(*conv_norm_out, sample);
  sample = silu_after_norm(std::move(sample));  // conv_act, in place on the norm's output
  sample = conv_out(sample);  // [B, out_channels, h, w]
  return sample.to(at::kFloat);
}

std::shared_ptr<UNet2DConditionModelImpl> UNet2DConditionModelImpl::from_pretrained(const std::string& folder,
                                                                                     const std::string& subfolder,
                                                                                     const std::string& variant,
                                                                                     const nlohmann::json& overrides,
                                                                                     at::ScalarType dtype) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  if (overrides.is_object() && !overrides.empty()) cfg.apply_overrides(overrides);
  std::shared_ptr<UNet2DConditionModelImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<UNet2DConditionModelImpl>(UNet2DConditionModelConfig::from_config(cfg));
  }
  const std::string dir = component_dir(folder, subfolder);
  load_state_dict(*model, resolve_weight_files(dir, kDiffusersWeightsName, variant), dtype);
  model->eval();
  return model;
}

void register_unet_2d_condition(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "UNet2DConditionModel";
  info.category = ComponentCategory::Model;
  info.description = "diffusers' UNet2DConditionModel (SD 1.x/2.x, SDXL, LCM) from a diffusers folder";
  info.create = [](const ComponentSpec& spec) { return create_diffusers_model<UNet2DConditionModelImpl, UNet2DConditionModelConfig>(spec); };
  info.accepts_loras = true;  // fuse_component_loras in create_diffusers_model
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
