#include "models/vision/clip_vision_model.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/common/precision.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/skip_init.h"
#include "models/loading/state_dict.h"

namespace tessera {

// ---- config ----

CLIPVisionConfig CLIPVisionConfig::from_config(ModelConfig& c) {
  CLIPVisionConfig o;
  o.hidden_size(c.get_int("hidden_size", o.hidden_size()));
  o.intermediate_size(c.get_int("intermediate_size", o.intermediate_size()));
  o.projection_dim(c.get_int("projection_dim", o.projection_dim()));
  o.num_hidden_layers(c.get_int("num_hidden_layers", o.num_hidden_layers()));
  o.num_attention_heads(c.get_int("num_attention_heads", o.num_attention_heads()));
  o.num_channels(c.get_int("num_channels", o.num_channels()));
  o.image_size(c.get_int("image_size", o.image_size()));
  o.patch_size(c.get_int("patch_size", o.patch_size()));
  o.hidden_act(c.get_choice("hidden_act", o.hidden_act(),
                            {"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}));
  o.layer_norm_eps(c.get_float("layer_norm_eps", o.layer_norm_eps()));
  // Training-only or bookkeeping fields of transformers' config.
  for (const char* f : {"attention_dropout", "dropout", "initializer_factor", "initializer_range", "architectures",
                        "model_type", "torch_dtype", "transformers_version", "_name_or_path"})
    c.accept(f);
  for (auto [name, v] : {std::pair<const char*, int64_t>{"hidden_size", o.hidden_size()},
                         {"intermediate_size", o.intermediate_size()},
                         {"projection_dim", o.projection_dim()},
                         {"num_attention_heads", o.num_attention_heads()},
                         {"num_channels", o.num_channels()},
                         {"image_size", o.image_size()},
                         {"patch_size", o.patch_size()}})
    if (v <= 0) c.fail(name, "must be positive, got " + std::to_string(v));
  if (o.num_hidden_layers() < 0) c.fail("num_hidden_layers", "must not be negative");
  if (o.hidden_size() % o.num_attention_heads() != 0)
    c.fail("hidden_size", "must be divisible by num_attention_heads (" + std::to_string(o.num_attention_heads()) + ")");
  if (o.image_size() % o.patch_size() != 0)
    c.fail("image_size", "must be a multiple of patch_size (" + std::to_string(o.patch_size()) + ")");
  if (!(o.layer_norm_eps() > 0)) c.fail("layer_norm_eps", "must be positive");
  return o;
}

CLIPTextConfig CLIPVisionConfig::encoder_config() const {
  // CLIPEncoderLayer reads only these fields; the vocabulary/position fields are unused by it.
  return CLIPTextConfig()
      .hidden_size(hidden_size())
      .intermediate_size(intermediate_size())
      .num_hidden_layers(num_hidden_layers())
      .num_attention_heads(num_attention_heads())
      .hidden_act(hidden_act())
      .layer_norm_eps(layer_norm_eps());
}

// ---- embeddings ----

CLIPVisionEmbeddingsImpl::CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& config)
    : class_embedding(register_parameter("class_embedding", torch::randn({config.hidden_size()}))),
      patch_embedding(register_module(
          "patch_embedding",
          torch::nn::Conv2d(torch::nn::Conv2dOptions(config.num_channels(), config.hidden_size(), config.patch_size())
                                .stride(config.patch_size())
                                .bias(false)))),
      position_embedding(register_module(
          "position_embedding", torch::nn::Embedding(config.num_positions(), config.hidden_size()))) {}

at::Tensor CLIPVisionEmbeddingsImpl::forward(const at::Tensor& pixel_values) {
  const int64_t batch = pixel_values.size(0);
  at::Tensor patch_embeds = patch_embedding(pixel_values.to(patch_embedding->weight.scalar_type()));  // [B, H, g, g]
  patch_embeds = patch_embeds.flatten(2).transpose(1, 2);                                           // [B, P, H]
  at::Tensor class_embeds = class_embedding.to(patch_embeds.scalar_type()).expand({batch, 1, -1});   // [B, 1, H]
  at::Tensor embeddings = at::cat({class_embeds, patch_embeds}, 1);                                  // [B, 1 + P, H]
  return embeddings + position_embedding->weight.unsqueeze(0);                                       // + [1, 1 + P, H]
}

// ---- transformer ----

namespace {
torch::nn::LayerNorm make_layer_norm(const CLIPVisionConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size()}).eps(c.layer_norm_eps()));
}
}  // namespace

CLIPVisionTransformerImpl::CLIPVisionTransformerImpl(const CLIPVisionConfig& config_)
    : config(config_),
      embeddings(register_module("embeddings", CLIPVisionEmbeddings(config_))),
      pre_layrnorm(register_module("pre_layrnorm", make_layer_norm(config_))),
      encoder(register_module("encoder", CLIPEncoder(config_.encoder_config()))),
      post_layernorm(register_module("post_layernorm", make_layer_norm(config_))) {}

CLIPVisionModelOutput CLIPVisionTransformerImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states) {
  if (pixel_values.dim() != 4 || pixel_values.size(1) != config.num_channels() ||
      pixel_values.size(2) != config.image_size() || pixel_values.size(3) != config.image_size())
    throw ExecutionError("CLIPVisionModelWithProjection: pixel_values must be [B, " +
                         std::to_string(config.num_channels()) + ", " + std::to_string(config.image_size()) + ", " +
                         std::to_string(config.image_size()) + "] (the config's image_size; position embeddings are "
                         "not interpolated), got " + c10::str(pixel_values.sizes()));
  if (!at::isFloatingType(pixel_values.scalar_type()))
    throw ExecutionError("CLIPVisionModelWithProjection: pixel_values must be floating point (CLIPImageProcessor's "
                         "normalised output), got " + std::string(c10::toString(pixel_values.scalar_type())));
  at::Tensor hidden_states = embeddings(pixel_values);           // [B, 1 + P, H]
  hidden_states = layer_norm_fp32(*pre_layrnorm, hidden_states);  // [B, 1 + P, H]
  CLIPVisionModelOutput out;
  // No attention mask: every patch attends to every patch.
  out.last_hidden_state = encoder(hidden_states, at::Tensor(), output_hidden_states ? &out.hidden_states : nullptr);
  const at::Tensor pooled = out.last_hidden_state.select(1, 0);  // [B, H] the class token
  out.pooler_output = layer_norm_fp32(*post_layernorm, pooled);  // [B, H]
  return out;
}

// ---- model ----

CLIPVisionModelWithProjectionImpl::CLIPVisionModelWithProjectionImpl(CLIPVisionConfig config)
    : vision_model(register_module("vision_model", CLIPVisionTransformer(config))),
      visual_projection(register_module(
          "visual_projection",
          torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size(), config.projection_dim()).bias(false)))) {}

CLIPVisionModelOutput CLIPVisionModelWithProjectionImpl::forward(const at::Tensor& pixel_values,
                                                                 bool output_hidden_states) {
  CLIPVisionModelOutput out = vision_model(pixel_values, output_hidden_states);
  out.image_embeds = visual_projection(out.pooler_output);  // [B, projection_dim]
  out.image_embeds = to_float32(out.image_embeds);
  out.last_hidden_state = to_float32(out.last_hidden_state);
  out.pooler_output = to_float32(out.pooler_output);
  for (auto& h : out.hidden_states) h = to_float32(h);
  return out;
}

size_t CLIPVisionModelWithProjectionImpl::nbytes() const { return module_nbytes(*this); }

// ---- loading ----

CLIPVisionConfig clip_vision_config_from_weights(const std::map<std::string, at::Tensor>& t, const std::string& file) {
  auto need = [&](const std::string& key) -> const at::Tensor& {
    auto it = t.find(key);
    if (it == t.end())
      throw ModelLoadError("'" + file + "' is not a CLIP vision encoder in transformers' names: it has no '" + key +
                               "'",
                           SourceLoc{file}, {}, "give a CLIPVisionModelWithProjection folder (config.json, model.safetensors)");
    return it->second;
  };
  const std::string e = "vision_model.embeddings.";
  const at::Tensor& patch = need(e + "patch_embedding.weight");  // [H, C, p, p]
  const at::Tensor& positions = need(e + "position_embedding.weight");  // [(S / p)^2 + 1, H]
  const at::Tensor& fc1 = need("vision_model.encoder.layers.0.mlp.fc1.weight");  // [I, H]
  const at::Tensor& projection = need("visual_projection.weight");  // [P, H]
  const int64_t hidden = need(e + "class_embedding").size(0);
  int64_t layers = 0;
  while (t.count("vision_model.encoder.layers." + std::to_string(layers) + ".mlp.fc1.weight")) ++layers;
  const int64_t grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(positions.size(0) - 1))));
  if (grid * grid + 1 != positions.size(0))
    throw ModelLoadError("'" + file + "': the position embedding has " + std::to_string(positions.size(0)) +
                             " rows, not a square grid of patches + the class token",
                         SourceLoc{file});
  struct Known {
    int64_t width, heads;
    const char* act;
    const char* name;
  };
  static const Known kKnown[] = {{1024, 16, "quick_gelu", "OpenAI CLIP ViT-L/14"},
                                 {1280, 16, "gelu", "OpenCLIP ViT-H/14"},
                                 {1664, 16, "gelu", "OpenCLIP ViT-bigG/14"}};
  const Known* known = nullptr;
  for (const Known& k : kKnown)
    if (k.width == hidden) known = &k;
  if (!known)
    throw ModelLoadError("'" + file + "' is a CLIP vision encoder of width " + std::to_string(hidden) +
                             ", whose heads and activation are not in its weights (known widths: 1024 ViT-L/14, "
                             "1280 ViT-H/14, 1664 ViT-bigG/14)",
                         SourceLoc{file}, {}, "give its folder with a config.json instead");
  CLIPVisionConfig c;
  c.hidden_size(hidden)
      .intermediate_size(fc1.size(0))
      .projection_dim(projection.size(0))
      .num_hidden_layers(layers)
      .num_attention_heads(known->heads)
      .num_channels(patch.size(1))
      .patch_size(patch.size(2))
      .image_size(grid * patch.size(2))
      .hidden_act(known->act);
  return c;
}

std::shared_ptr<CLIPVisionModelWithProjectionImpl> CLIPVisionModelWithProjectionImpl::from_file(
    const std::string& file, at::ScalarType dtype) {
  const auto tensors = read_safetensors_files({file});
  const CLIPVisionConfig config = clip_vision_config_from_weights(tensors, file);
  std::shared_ptr<CLIPVisionModelWithProjectionImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<CLIPVisionModelWithProjectionImpl>(config);
  }
  LoadStateDictOptions load;
  load.dtype = dtype;
  load.ignore = {"position_ids"};
  load_state_dict(*model, std::vector<std::string>{file}, load);
  model->eval();
  return model;
}

namespace {

/// From a transformers folder (config.json + model.safetensors, variant or shards). Single-file checkpoints hold
/// no image encoder, so `from` is always a folder here.
std::shared_ptr<CLIPVisionModelWithProjectionImpl> load_vision_model(const ComponentSpec& spec,
                                                                     at::ScalarType dtype) {
  ModelConfig config = ModelConfig::from_folder(spec.from, spec.subfolder);
  config.apply_overrides(spec.config);
  CLIPVisionConfig options = CLIPVisionConfig::from_config(config);
  config.finish();
  std::shared_ptr<CLIPVisionModelWithProjectionImpl> model;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    model = std::make_shared<CLIPVisionModelWithProjectionImpl>(std::move(options));
  }
  LoadStateDictOptions load;
  load.dtype = dtype;
  load.ignore = {"position_ids"};  // transformers' non-persistent buffer, present in older checkpoints
  load_state_dict(*model,
                  resolve_weight_files(component_dir(spec.from, spec.subfolder), kTransformersWeightsName,
                                       spec.variant),
                  load);
  model->eval();
  return model;
}

}  // namespace

std::shared_ptr<CLIPVisionModelWithProjectionImpl> CLIPVisionModelWithProjectionImpl::from_pretrained(
    const std::string& folder, const std::string& subfolder, at::ScalarType dtype) {
  ComponentSpec spec;
  spec.name = subfolder.empty() ? "image_encoder" : subfolder;
  spec.type = "CLIPVisionModelWithProjection";
  spec.from = folder;
  spec.subfolder = subfolder;
  return load_vision_model(spec, dtype);
}

void register_clip_vision_model(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "CLIPVisionModelWithProjection";
  info.category = ComponentCategory::Model;
  info.description = "transformers' CLIP vision encoder with visual_projection (the IP-Adapter image_encoder): "
                     "image_embeds, last_hidden_state, hidden_states";
  info.create = [](const ComponentSpec& spec) -> ComponentPtr {
    const at::ScalarType dtype = model_dtype(spec);
    if (spec.creation == Creation::FromPretrained && !spec.from.empty()) return load_vision_model(spec, dtype);
    ModelConfig config(nlohmann::json::object(), "component '" + spec.name + "' config");
    config.apply_overrides(spec.config);
    auto model = std::make_shared<CLIPVisionModelWithProjectionImpl>(CLIPVisionConfig::from_config(config));
    config.finish();
    if (dtype != at::kFloat) model->to(dtype);
    model->eval();
    return model;
  };
  registry.add_component_type(std::move(info));
}

}  // namespace tessera
