#include "models/transformers/transformer_sd3.h"

#include <algorithm>
#include <regex>

#include <torch/torch.h>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/common/precision.h"
#include "models/loading/component_factory.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/skip_init.h"
#include "models/loading/state_dict.h"
#include "models/transformers/joint_transformer_block.h"

namespace tessera {

namespace {
const char* const kStack = "transformer_blocks";
}  // namespace

// ---- config ----

SD3Transformer2DModelConfig SD3Transformer2DModelConfig::from_config(ModelConfig& c) {
  SD3Transformer2DModelConfig s;
  auto positive = [&](const char* name, int64_t def) {
    const int64_t v = c.get_int(name, def);
    if (v < 1) c.fail(name, "must be at least 1, got " + std::to_string(v));
    return v;
  };
  s.sample_size = positive("sample_size", 128);
  s.patch_size = positive("patch_size", 2);
  s.in_channels = positive("in_channels", 16);
  s.num_layers = positive("num_layers", 18);
  s.attention_head_dim = positive("attention_head_dim", 64);
  s.num_attention_heads = positive("num_attention_heads", 18);
  s.joint_attention_dim = positive("joint_attention_dim", 4096);
  s.caption_projection_dim = positive("caption_projection_dim", 1152);
  s.pooled_projection_dim = positive("pooled_projection_dim", 2048);
  // null → in_channels (diffusers: out_channels if out_channels is not None else in_channels)
  if (c.json().contains("out_channels") && c.json()["out_channels"].is_null()) {
    c.accept("out_channels");
    s.out_channels = s.in_channels;
  } else {
    s.out_channels = positive("out_channels", 16);
  }
  if (c.json().contains("pos_embed_max_size") && c.json()["pos_embed_max_size"].is_null())
    c.fail("pos_embed_max_size", "null (a position table resized to the input) is not supported; SD3 checkpoints "
                                 "set it (96 for SD3-medium)");
  s.pos_embed_max_size = positive("pos_embed_max_size", 96);
  s.dual_attention_layers = c.get_int_list("dual_attention_layers", {});
  for (int64_t i : s.dual_attention_layers)
    if (i < 0 || i >= s.num_layers)
      c.fail("dual_attention_layers", "index " + std::to_string(i) + " is not a block (num_layers " +
                                          std::to_string(s.num_layers) + ")");
  s.qk_norm = c.get_optional_string("qk_norm");
  if (s.qk_norm && *s.qk_norm != "rms_norm")
    c.fail("qk_norm", "'" + *s.qk_norm + "' is not supported (null or \"rms_norm\")");
  if (s.caption_projection_dim != s.inner_dim())
    c.fail("caption_projection_dim", std::to_string(s.caption_projection_dim) +
                                         " must equal num_attention_heads * attention_head_dim (" +
                                         std::to_string(s.inner_dim()) +
                                         "): the joint attention projects the context with inner-dim layers");
  if (s.inner_dim() % 4 != 0)
    c.fail("attention_head_dim", "num_attention_heads * attention_head_dim (" + std::to_string(s.inner_dim()) +
                                     ") must be a multiple of 4 for the 2-D sin-cos position table");
  if (s.sample_size / s.patch_size < 1)
    c.fail("sample_size", std::to_string(s.sample_size) + " is smaller than patch_size " + std::to_string(s.patch_size));
  c.finish();
  return s;
}

SD3Transformer2DModelConfig SD3Transformer2DModelConfig::from_json(const nlohmann::json& json,
                                                                   const std::string& source) {
  ModelConfig c(json, source);
  return from_config(c);
}

// ---- model ----

SD3Transformer2DModelImpl::SD3Transformer2DModelImpl(SD3Transformer2DModelConfig config_) : config(std::move(config_)) {
  const SD3Transformer2DModelConfig& c = config;
  const int64_t inner_dim = c.inner_dim();
  pos_embed = register_module("pos_embed", PatchEmbed(PatchEmbedOptions()
                                                          .height(c.sample_size)
                                                          .width(c.sample_size)
                                                          .patch_size(c.patch_size)
                                                          .in_channels(c.in_channels)
                                                          .embed_dim(inner_dim)
                                                          .pos_embed_max_size(c.pos_embed_max_size)));
  time_text_embed =
      register_module("time_text_embed", CombinedTimestepTextProjEmbeddings(inner_dim, c.pooled_projection_dim));
  context_embedder = register_module("context_embedder", torch::nn::Linear(c.joint_attention_dim, c.caption_projection_dim));
  transformer_blocks = register_module(kStack, torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool dual = std::find(c.dual_attention_layers.begin(), c.dual_attention_layers.end(), i) !=
                      c.dual_attention_layers.end();
    transformer_blocks->push_back(JointTransformerBlock(
        JointTransformerBlockOptions(inner_dim, c.num_attention_heads, c.attention_head_dim)
            .context_pre_only(i == c.num_layers - 1)
            .qk_norm(c.qk_norm)
            .use_dual_attention(dual)));
  }
  norm_out = register_module("norm_out", AdaLayerNormContinuous(inner_dim, inner_dim, /*elementwise_affine=*/false,
                                                                /*eps=*/1e-6));
  proj_out = register_module("proj_out", torch::nn::Linear(torch::nn::LinearOptions(
                                                               inner_dim, c.patch_size * c.patch_size * c.out_channels)
                                                               .bias(true)));
}

std::vector<std::pair<std::string, int64_t>> SD3Transformer2DModelImpl::hook_stacks() const {
  return {{kStack, static_cast<int64_t>(transformer_blocks->size())}};
}

int SD3Transformer2DModelImpl::set_attn_processor(
    const std::string& name_regex, const std::function<std::shared_ptr<JointAttentionProcessor>()>& make) {
  const std::regex re(name_regex);
  int count = 0;
  for (auto& item : named_modules("", false))
    if (auto* a = item.value()->as<JointAttentionImpl>())
      if (std::regex_search(item.key(), re)) {
        a->set_processor(make());
        ++count;
      }
  return count;
}

size_t SD3Transformer2DModelImpl::nbytes() const { return module_nbytes(*this); }

void SD3Transformer2DModelImpl::validate_inputs(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                                const at::Tensor& pooled_projections, const at::Tensor& timestep,
                                                const SD3TransformerInputs& inputs) const {
  const SD3Transformer2DModelConfig& c = config;
  const std::string who = "SD3Transformer2DModel: ";
  if (!hidden_states.defined() || hidden_states.dim() != 4 || hidden_states.size(1) != c.in_channels)
    throw InputError(who + "hidden_states must be [B, " + std::to_string(c.in_channels) + ", H, W], got " +
                     (hidden_states.defined() ? c10::str(hidden_states.sizes()) : std::string("nothing")));
  const int64_t batch = hidden_states.size(0), height = hidden_states.size(2), width = hidden_states.size(3);
  if (height % c.patch_size != 0 || width % c.patch_size != 0)
    throw InputError(who + "latent height and width (" + std::to_string(height) + "x" + std::to_string(width) +
                     ") must be multiples of patch_size " + std::to_string(c.patch_size));
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != batch ||
      encoder_hidden_states.size(2) != c.joint_attention_dim)
    throw InputError(who + "encoder_hidden_states must be [" + std::to_string(batch) + ", S, " +
                     std::to_string(c.joint_attention_dim) + "], got " +
                     (encoder_hidden_states.defined() ? c10::str(encoder_hidden_states.sizes()) : std::string("nothing")));
  if (!pooled_projections.defined() || pooled_projections.dim() != 2 || pooled_projections.size(0) != batch ||
      pooled_projections.size(1) != c.pooled_projection_dim)
    throw InputError(who + "pooled_projections must be [" + std::to_string(batch) + ", " +
                     std::to_string(c.pooled_projection_dim) + "], got " +
                     (pooled_projections.defined() ? c10::str(pooled_projections.sizes()) : std::string("nothing")));
  if (!timestep.defined() || timestep.dim() > 1 || (timestep.dim() == 1 && timestep.size(0) != 1 && timestep.size(0) != batch))
    throw InputError(who + "timestep must be a scalar or have one entry per batch element (" + std::to_string(batch) +
                     "), got " + (timestep.defined() ? c10::str(timestep.sizes()) : std::string("nothing")));
  const int64_t n = static_cast<int64_t>(transformer_blocks->size());
  for (int64_t i : inputs.skip_layers)
    if (i < 0 || i >= n)
      throw InputError(who + "skip_layers index " + std::to_string(i) + " is out of range (" + std::to_string(n) +
                       " blocks)");
  for (const at::Tensor& r : inputs.block_controlnet_hidden_states)
    if (!r.defined() || r.dim() != 3 || r.size(0) != batch ||
        r.size(1) != (height / c.patch_size) * (width / c.patch_size) || r.size(2) != c.inner_dim())
      throw InputError(who + "each block_controlnet_hidden_states entry must be [" + std::to_string(batch) + ", " +
                       std::to_string((height / c.patch_size) * (width / c.patch_size)) + ", " +
                       std::to_string(c.inner_dim()) + "], got " +
                       (r.defined() ? c10::str(r.sizes()) : std::string("nothing")));
  for (const LayerHook& h : inputs.hooks) {
    if (h.layers.fqn != "auto" && h.layers.fqn != kStack)
      throw ValidationError("layer hook fqn '" + h.layers.fqn +
                            "' names no transformer-block stack of SD3Transformer2DModel (transformer_blocks)");
    for (int64_t idx : h.layers.indices)
      if (idx < 0 || idx >= n)
        throw ValidationError("layer hook index " + std::to_string(idx) + " is out of range for 'transformer_blocks' (" +
                              std::to_string(n) + " blocks)");
    if (h.kind == LayerHookKind::SmoothedEnergyBlur)
      throw ValidationError(std::string("layer hook ") + layer_hook_kind_name(h.kind) +
                            " is not supported by SD3Transformer2DModel (its joint attention has no square image "
                            "query to blur)");
  }
}

at::Tensor SD3Transformer2DModelImpl::forward(const at::Tensor& hidden_states_in, const at::Tensor& encoder_hidden_states_in,
                                              const at::Tensor& pooled_projections_in, const at::Tensor& timestep_in,
                                              const SD3TransformerInputs& inputs) {
  validate_inputs(hidden_states_in, encoder_hidden_states_in, pooled_projections_in, timestep_in, inputs);
  const int64_t batch = hidden_states_in.size(0);
  const int64_t height = hidden_states_in.size(2), width = hidden_states_in.size(3);

  // Inputs in the compute dtype (a no-op for float32); the timestep sinusoid is computed in float32.
  const at::ScalarType compute_dtype = dtype();
  at::Tensor hidden_states = hidden_states_in.to(compute_dtype);
  at::Tensor encoder_hidden_states = encoder_hidden_states_in.to(compute_dtype);
  const at::Tensor pooled_projections = pooled_projections_in.to(compute_dtype);
  at::Tensor timestep = timestep_in.to(hidden_states.device());
  if (timestep.dim() == 0) timestep = timestep.unsqueeze(0);
  timestep = timestep.expand({batch});  // [B]

  hidden_states = pos_embed(hidden_states);       // [B, N, D], N = (H/p)*(W/p); position table added
  hidden_states = hidden_states.contiguous();
  const at::Tensor temb = time_text_embed(timestep, pooled_projections);  // [B, D]
  encoder_hidden_states = context_embedder(encoder_hidden_states);        // [B, S, D]

  const std::vector<LayerHook>* hooks = inputs.hooks.empty() ? nullptr : &inputs.hooks;
  HookSite site{hooks, kStack, 0, /*stack_is_primary=*/true};
  const auto& controlnet = inputs.block_controlnet_hidden_states;
  const int64_t n = static_cast<int64_t>(transformer_blocks->size());
  for (int64_t i = 0; i < n; ++i) {
    auto* block = transformer_blocks[i]->as<JointTransformerBlockImpl>();
    const bool is_skip =
        std::find(inputs.skip_layers.begin(), inputs.skip_layers.end(), i) != inputs.skip_layers.end();
    if (!is_skip) {
      site.index = i;
      JointTransformerBlockOutput out = block->forward(hidden_states, encoder_hidden_states, temb, site);
      encoder_hidden_states = out.encoder_hidden_states;
      hidden_states = out.hidden_states;
    }
    // controlnet residual
    if (!controlnet.empty() && !block->context_pre_only()) {
      const double interval_control = static_cast<double>(n) / static_cast<double>(controlnet.size());
      const auto k = static_cast<size_t>(static_cast<double>(i) / interval_control);
      hidden_states = hidden_states + controlnet[k].to(hidden_states.scalar_type());
    }
  }

  hidden_states = norm_out(hidden_states, temb);  // [B, N, D]
  hidden_states = proj_out(hidden_states);        // [B, N, p*p*C]

  // unpatchify
  const int64_t p = config.patch_size, h = height / p, w = width / p, out_c = config.out_channels;
  hidden_states = hidden_states.reshape({batch, h, w, p, p, out_c});  // [B, h, w, p, q, C]
  hidden_states = hidden_states.permute({0, 5, 1, 3, 2, 4});          // einsum nhwpqc->nchpwq: [B, C, h, p, w, q]
  at::Tensor output = hidden_states.reshape({batch, out_c, h * p, w * p});  // [B, C, H, W]
  return output.to(at::kFloat);
}

std::shared_ptr<SD3Transformer2DModelImpl> SD3Transformer2DModelImpl::from_pretrained(const std::string& folder,
                                                                                      const std::string& subfolder,
                                                                                      const std::string& variant,
                                                                                      const nlohmann::json& overrides,
                                                                                      at::ScalarType dtype) {
  ModelConfig cfg = ModelConfig::from_folder(folder, subfolder);
  if (overrides.is_object() && !overrides.empty()) cfg.apply_overrides(overrides);
  std::shared_ptr<SD3Transformer2DModelImpl> model;
  {
    SkipRandomInit skip;  // every parameter and the position table are loaded below
    model = std::make_shared<SD3Transformer2DModelImpl>(SD3Transformer2DModelConfig::from_config(cfg));
  }
  load_state_dict(*model, resolve_weight_files(component_dir(folder, subfolder), kDiffusersWeightsName, variant),
                  dtype);
  model->eval();
  return model;
}

void register_transformer_sd3(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "SD3Transformer2DModel";
  info.category = ComponentCategory::Model;
  info.description = "diffusers' SD3Transformer2DModel (Stable Diffusion 3 / 3.5 MMDiT) from a diffusers folder";
  info.create = [](const ComponentSpec& spec) {
    return create_diffusers_model<SD3Transformer2DModelImpl, SD3Transformer2DModelConfig>(spec);
  };
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
