#include "models/adapters/ip_adapter.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/common/precision.h"
#include "models/loading/skip_init.h"
#include "models/loading/state_dict.h"

namespace tessera {

// ---- projections ----

at::Tensor IPAdapterImageProjectionImpl::project(const at::Tensor& image_embeds) {
  if (image_embeds.dim() != 2 + feature_dims || image_embeds.size(-1) != image_embed_dim)
    throw ExecutionError(class_name() + ": image_embeds must be [B, num_images, " +
                         (feature_dims == 2 ? std::string("L, ") : std::string()) + std::to_string(image_embed_dim) +
                         "], got " + c10::str(image_embeds.sizes()));
  const int64_t batch = image_embeds.size(0), num_images = image_embeds.size(1);
  at::Tensor flat = image_embeds.flatten(0, 1);                       // [B * n, ...]
  at::Tensor tokens = forward(flat);                                  // [B * n, T, cross]
  tokens = tokens.view({batch, num_images, tokens.size(1), tokens.size(2)});  // [B, n, T, cross]
  return to_float32(tokens);
}

ImageProjectionImpl::ImageProjectionImpl(int64_t image_embed_dim_, int64_t cross_attention_dim_,
                                         int64_t num_image_text_embeds)
    : image_embeds(register_module(
          "image_embeds", torch::nn::Linear(image_embed_dim_, num_image_text_embeds * cross_attention_dim_))),
      norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({cross_attention_dim_})))) {
  image_embed_dim = image_embed_dim_;
  cross_attention_dim = cross_attention_dim_;
  num_tokens = num_image_text_embeds;
  feature_dims = 1;
}

at::Tensor ImageProjectionImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0);
  at::Tensor h = image_embeds(x.to(image_embeds->weight.scalar_type()));  // [N, T * cross]
  h = h.reshape({batch, num_tokens, -1});                                   // [N, T, cross]
  return layer_norm_fp32(*norm, h);
}

IPAdapterPlusImageProjectionBlockImpl::IPAdapterPlusImageProjectionBlockImpl(int64_t embed_dims, int64_t dim_head,
                                                                             int64_t heads, int64_t ff_inner_dim)
    : ln0(register_module("ln0", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dims})))),
      ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dims})))),
      // diffusers' Attention(query_dim=embed_dims, dim_head, heads, out_bias=False): q/k/v without bias; the
      // keys/values are passed explicitly (width embed_dims).
      attn(register_module("attn", Attention(AttentionOptions(embed_dims)
                                                 .cross_attention_dim(embed_dims)
                                                 .heads(heads)
                                                 .dim_head(dim_head)
                                                 .bias(false)
                                                 .out_bias(false)))),
      ff_norm(torch::nn::LayerNorm(torch::nn::LayerNormOptions({embed_dims}))),
      ff_feed_forward(FeedForward(
          FeedForwardOptions(embed_dims).activation_fn("gelu").inner_dim(ff_inner_dim).bias(false))),
      ff(register_module("ff", torch::nn::ModuleList(ff_norm, ff_feed_forward))) {}

at::Tensor IPAdapterPlusImageProjectionBlockImpl::forward(const at::Tensor& x, const at::Tensor& latents,
                                                          const at::Tensor& residual) {
  at::Tensor encoder_hidden_states = layer_norm_fp32(*ln0, x);              // [N, L, hidden]
  at::Tensor normed = layer_norm_fp32(*ln1, latents);                       // [N, Q, hidden]
  encoder_hidden_states = at::cat({encoder_hidden_states, normed}, -2);     // [N, L + Q, hidden]
  at::Tensor h = attn->forward(normed, encoder_hidden_states) + residual;   // [N, Q, hidden]
  return ff_feed_forward->forward(layer_norm_fp32(*ff_norm, h)) + h;        // [N, Q, hidden]
}

IPAdapterPlusImageProjectionImpl::IPAdapterPlusImageProjectionImpl(const IPAdapterPlusImageProjectionConfig& c)
    : config(c),
      latents(register_parameter("latents", torch::randn({1, c.num_queries, c.hidden_dims}) /
                                                std::sqrt(static_cast<double>(c.hidden_dims)))),
      proj_in(register_module("proj_in", torch::nn::Linear(c.embed_dims, c.hidden_dims))),
      proj_out(register_module("proj_out", torch::nn::Linear(c.hidden_dims, c.output_dims))),
      norm_out(register_module("norm_out", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.output_dims})))),
      layers(register_module("layers", torch::nn::ModuleList())) {
  for (int64_t i = 0; i < c.depth; ++i)
    layers->push_back(IPAdapterPlusImageProjectionBlock(c.hidden_dims, c.dim_head, c.heads, c.ff_inner_dim));
  image_embed_dim = c.embed_dims;
  cross_attention_dim = c.output_dims;
  num_tokens = c.num_queries;
  feature_dims = 2;
}

at::Tensor IPAdapterPlusImageProjectionImpl::forward(const at::Tensor& image_embeds) {
  at::Tensor lat = latents.repeat({image_embeds.size(0), 1, 1});       // [N, Q, hidden]
  at::Tensor x = proj_in(image_embeds.to(latents.scalar_type()));      // [N, L, hidden]
  for (const auto& block : *layers) {
    const at::Tensor residual = lat;
    lat = block->as<IPAdapterPlusImageProjectionBlock>()->forward(x, lat, residual);
  }
  lat = proj_out(lat);                                                  // [N, Q, cross]
  return layer_norm_fp32(*norm_out, lat);
}

// ---- file reading and conversion ----

const char* ip_adapter_kind_name(IPAdapterKind kind) {
  return kind == IPAdapterKind::Plus ? "IP-Adapter Plus (IPAdapterPlusImageProjection)"
                                     : "IP-Adapter (ImageProjection)";
}

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool is_number(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isdigit(ch); });
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t b = 0;
  for (size_t e; (e = s.find('.', b)) != std::string::npos; b = e + 1) parts.push_back(s.substr(b, e - b));
  parts.push_back(s.substr(b));
  return parts;
}

std::string join_dots(const std::vector<std::string>& parts, size_t from) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) out += (out.empty() ? "" : ".") + parts[i];
  return out;
}

std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }

/// The Plus Resampler's original names → diffusers' (`layers.N.0.*` attention, `layers.N.1.*` feed-forward).
void convert_plus_key(const std::string& key, const at::Tensor& value, std::map<std::string, at::Tensor>& out) {
  const std::vector<std::string> p = split_dots(key);
  if (p.size() >= 4 && p[0] == "layers" && is_number(p[1]) && (p[2] == "0" || p[2] == "1")) {
    const std::string layer = "layers." + p[1] + ".";
    if (p[2] == "0") {
      if (p[3] == "norm1") return void(out[layer + "ln0." + join_dots(p, 4)] = value);
      if (p[3] == "norm2") return void(out[layer + "ln1." + join_dots(p, 4)] = value);
      if (p[3] == "to_q") return void(out[layer + "attn.to_q." + join_dots(p, 4)] = value);
      if (p[3] == "to_out") return void(out[layer + "attn.to_out.0." + join_dots(p, 4)] = value);
      if (p[3] == "to_kv") {
        // One [2 · inner, hidden] matrix: the first half is to_k, the second to_v (diffusers' chunk(2, dim=0)).
        // An odd row count leaves to_v undefined; read_ip_adapter_state_dict reports it.
        const bool even = value.dim() >= 1 && value.size(0) % 2 == 0;
        out[layer + "attn.to_k." + join_dots(p, 4)] = even ? value.narrow(0, 0, value.size(0) / 2) : at::Tensor();
        out[layer + "attn.to_v." + join_dots(p, 4)] =
            even ? value.narrow(0, value.size(0) / 2, value.size(0) / 2) : at::Tensor();
        return;
      }
    } else {
      if (p[3] == "0") return void(out[layer + "ff.0." + join_dots(p, 4)] = value);
      if (p[3] == "1") return void(out[layer + "ff.1.net.0.proj." + join_dots(p, 4)] = value);
      if (p[3] == "3") return void(out[layer + "ff.1.net.2." + join_dots(p, 4)] = value);
    }
  }
  out[key] = value;  // latents, proj_in, proj_out, norm_out (or an unknown key: the strict load names it)
}

[[noreturn]] void fail(const std::string& file, const std::string& message) {
  throw ModelLoadError("IP-Adapter file '" + file + "': " + message, SourceLoc{file});
}

}  // namespace

IPAdapterStateDict read_ip_adapter_state_dict(const std::string& file) {
  namespace fs = std::filesystem;
  if (!fs::exists(file)) fail(file, "no such file");
  std::string ext = fs::path(file).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (ext != ".safetensors")
    fail(file, "only .safetensors IP-Adapter files are supported (a .bin holds nested torch.save dicts; "
               "h94/IP-Adapter ships a .safetensors beside most of them)");
  const std::map<std::string, at::Tensor> all = read_safetensors_files({file});

  IPAdapterStateDict sd;
  sd.file = file;
  std::map<std::string, at::Tensor> proj;  // image_proj.* without the prefix
  std::map<std::string, at::Tensor> k_ip, v_ip;
  for (const auto& [key, value] : all) {
    if (starts_with(key, "image_proj.")) {
      proj[key.substr(11)] = value;
    } else if (starts_with(key, "ip_adapter.")) {
      const std::vector<std::string> p = split_dots(key);
      if (p.size() != 4 || p[3] != "weight" || (p[2] != "to_k_ip" && p[2] != "to_v_ip"))
        fail(file, "unexpected key '" + key + "' (expected ip_adapter.<id>.to_k_ip.weight / .to_v_ip.weight)");
      (p[2] == "to_k_ip" ? k_ip : v_ip)[p[1]] = value;
    }
  }
  if (proj.empty() || k_ip.empty())
    fail(file, "not an IP-Adapter file: it has no " + std::string(proj.empty() ? "'image_proj.*'" : "") +
                   (proj.empty() && k_ip.empty() ? " and no " : "") +
                   (k_ip.empty() ? "'ip_adapter.<id>.to_k_ip.weight'" : "") +
                   " keys (looked for image_proj.* and ip_adapter.<id>.to_k_ip.weight / .to_v_ip.weight; " +
                   std::to_string(all.size()) + " tensors in the file" +
                   (all.empty() ? std::string() : ", e.g. '" + all.begin()->first + "'") + ")");

  auto need = [&](const std::string& key) -> const at::Tensor& {
    auto it = proj.find(key);
    if (it == proj.end()) fail(file, "missing tensor 'image_proj." + key + "'");
    return it->second;
  };
  // Variant detection in diffusers' order (_convert_ip_adapter_image_proj_to_diffusers).
  if (proj.count("proj.weight")) {
    sd.kind = IPAdapterKind::Base;
    const at::Tensor& w = need("proj.weight");
    if (w.dim() != 2 || w.size(0) % 4 != 0)
      fail(file, "image_proj.proj.weight must be [4 · cross_attention_dim, image_embed_dim], got " + shape_str(w));
    sd.num_tokens = 4;
    sd.image_embed_dim = w.size(1);
    sd.cross_attention_dim = w.size(0) / 4;
    for (const auto& [key, value] : proj) {
      std::string name = key;
      if (starts_with(name, "proj.")) name = "image_embeds." + name.substr(5);  // norm.* stays
      sd.image_proj[name] = value;
    }
  } else if (proj.count("proj.3.weight")) {
    fail(file, "IP-Adapter Full (IPAdapterFullImageProjection, image_proj.proj.3.weight) is not supported");
  } else if (proj.count("perceiver_resampler.proj_in.weight")) {
    fail(file, "IP-Adapter FaceID Plus (image_proj.perceiver_resampler.*) is not supported");
  } else if (proj.count("norm.weight")) {
    fail(file, "IP-Adapter FaceID (IPAdapterFaceIDImageProjection) is not supported");
  } else {
    sd.kind = IPAdapterKind::Plus;
    const at::Tensor& latents = need("latents");
    const at::Tensor& proj_in = need("proj_in.weight");
    const at::Tensor& proj_out = need("proj_out.weight");
    if (latents.dim() != 3 || latents.size(0) != 1)
      fail(file, "image_proj.latents must be [1, num_queries, hidden_dims], got " + shape_str(latents));
    if (proj_in.dim() != 2 || proj_out.dim() != 2)
      fail(file, "image_proj.proj_in / proj_out weights must be 2-D, got " + shape_str(proj_in) + " / " +
                     shape_str(proj_out));
    const bool diffusers_names = proj.count("layers.0.attn.to_q.weight") > 0;
    for (const auto& [key, value] : proj) {
      if (diffusers_names) sd.image_proj[key] = value;
      else convert_plus_key(key, value, sd.image_proj);
    }
    for (const auto& [key, value] : sd.image_proj)
      if (!value.defined())
        fail(file, "'image_proj." + key.substr(0, key.find(".attn.")) +
                       ".0.to_kv.weight' must have an even number of rows (to_k and to_v stacked)");
    auto& c = sd.plus;
    c.num_queries = latents.size(1);
    c.hidden_dims = latents.size(2);
    c.embed_dims = proj_in.size(1);
    c.output_dims = proj_out.size(0);
    c.dim_head = 64;  // diffusers' fixed dim_head
    std::set<int64_t> depth_ids;
    for (const auto& [key, value] : sd.image_proj) {
      const std::vector<std::string> p = split_dots(key);
      if (p.size() > 2 && p[0] == "layers" && is_number(p[1])) depth_ids.insert(std::stoll(p[1]));
    }
    c.depth = static_cast<int64_t>(depth_ids.size());
    if (c.depth == 0 || *depth_ids.rbegin() != c.depth - 1)
      fail(file, "the Resampler's image_proj.layers.N must be numbered 0.." + std::to_string(c.depth - 1));
    auto converted = [&](const std::string& key) -> const at::Tensor& {
      auto it = sd.image_proj.find(key);
      if (it == sd.image_proj.end() || !it->second.defined()) fail(file, "missing Resampler tensor for '" + key + "'");
      return it->second;
    };
    const at::Tensor& to_q = converted("layers.0.attn.to_q.weight");
    if (to_q.dim() != 2 || to_q.size(0) % c.dim_head != 0)
      fail(file, "the Resampler's to_q weight must have a multiple of 64 rows (heads · dim_head 64), got " +
                     shape_str(to_q));
    c.heads = to_q.size(0) / c.dim_head;
    const at::Tensor& ff_in = converted("layers.0.ff.1.net.0.proj.weight");
    if (ff_in.dim() != 2) fail(file, "the Resampler's feed-forward weight must be 2-D, got " + shape_str(ff_in));
    c.ff_inner_dim = ff_in.size(0);
    sd.num_tokens = c.num_queries;
    sd.image_embed_dim = c.embed_dims;
    sd.cross_attention_dim = c.output_dims;
  }

  // ip_adapter.<id>: positive odd ids 1, 3, …, 2n - 1, both matrices [hidden, cross].
  std::set<int64_t> ids;
  for (const auto* m : {&k_ip, &v_ip})
    for (const auto& [id, value] : *m) {
      if (!is_number(id)) fail(file, "ip_adapter id '" + id + "' is not a number");
      const int64_t n = std::stoll(id);
      if (n <= 0 || n % 2 == 0)
        fail(file, "ip_adapter id " + id + " is not a positive odd number (the ids of cross-attention layers "
                   "are 1, 3, 5, …)");
      ids.insert(n);
    }
  int64_t expected = 1;
  for (int64_t id : ids) {
    if (id != expected)
      fail(file, "ip_adapter ids have a gap: " + std::to_string(expected) + " is missing before " +
                     std::to_string(id));
    expected += 2;
  }
  for (int64_t id : ids) {
    const std::string s = std::to_string(id);
    auto k = k_ip.find(s);
    auto v = v_ip.find(s);
    if (k == k_ip.end()) fail(file, "missing tensor 'ip_adapter." + s + ".to_k_ip.weight'");
    if (v == v_ip.end()) fail(file, "missing tensor 'ip_adapter." + s + ".to_v_ip.weight'");
    if (k->second.dim() != 2 || k->second.sizes() != v->second.sizes())
      fail(file, "ip_adapter." + s + ": to_k_ip " + shape_str(k->second) + " and to_v_ip " + shape_str(v->second) +
                     " must be the same [hidden, cross] matrix shape");
    if (k->second.size(1) != sd.cross_attention_dim)
      fail(file, "ip_adapter." + s + ".to_k_ip.weight is " + shape_str(k->second) + ": its input width must be the "
                 "image projection's output width " + std::to_string(sd.cross_attention_dim));
    sd.layers[id] = {k->second, v->second};
  }
  return sd;
}

// ---- IPAdapter ----

std::shared_ptr<IPAdapterImpl> IPAdapterImpl::from_file(const std::string& file, at::ScalarType dtype) {
  IPAdapterStateDict sd = read_ip_adapter_state_dict(file);
  auto adapter = std::make_shared<IPAdapterImpl>();
  adapter->file = file;
  adapter->kind = sd.kind;
  {
    SkipRandomInit skip;  // every parameter is loaded below
    if (sd.kind == IPAdapterKind::Base)
      adapter->image_proj = std::make_shared<ImageProjectionImpl>(sd.image_embed_dim, sd.cross_attention_dim, sd.num_tokens);
    else
      adapter->image_proj = std::make_shared<IPAdapterPlusImageProjectionImpl>(sd.plus);
  }
  adapter->register_module("image_proj", adapter->image_proj);
  std::map<std::string, SourceTensor> tensors;
  for (const auto& [name, t] : sd.image_proj) tensors[name] = SourceTensor{t, file + ": image_proj." + name, {}};
  LoadStateDictOptions options;
  options.dtype = dtype;
  load_state_dict(*adapter->image_proj, tensors, options, "the IP-Adapter file " + file);
  for (auto& [id, w] : sd.layers)
    adapter->layers[id] = {w.to_k_ip.to(dtype).contiguous(), w.to_v_ip.to(dtype).contiguous()};
  adapter->eval();
  return adapter;
}

std::shared_ptr<IPAdapterImpl> IPAdapterImpl::load(const std::string& file, const std::string& image_encoder_dir,
                                                   at::ScalarType dtype) {
  namespace fs = std::filesystem;
  auto adapter = from_file(file, dtype);
  // "" = image_encoder/ beside the file; a relative path that does not exist from here is taken from the file's
  // folder (diffusers' image_encoder_folder is relative to the repository).
  fs::path dir = image_encoder_dir.empty() ? fs::path("image_encoder") : fs::path(image_encoder_dir);
  if (dir.is_relative() && (image_encoder_dir.empty() || !fs::exists(dir))) dir = fs::path(file).parent_path() / dir;
  const std::string hint =
      "give the image encoder with --set ip_adapter_image_encoder=PATH: a CLIPVisionModelWithProjection folder "
      "(config.json, model.safetensors) or one .safetensors file (ComfyUI's models/clip_vision)";
  const bool single_file = fs::is_regular_file(dir);
  if (!single_file && (!fs::is_directory(dir) || !fs::exists(dir / "config.json")))
    throw ModelLoadError("IP-Adapter file '" + file + "' needs its image encoder, and '" + dir.string() +
                             (fs::is_directory(dir) ? "' has no config.json" : "' does not exist"),
                         SourceLoc{file}, {}, hint);
  adapter->image_encoder_dir = dir.string();
  adapter->image_encoder = single_file ? CLIPVisionModelWithProjectionImpl::from_file(dir.string(), dtype)
                                       : CLIPVisionModelWithProjectionImpl::from_pretrained(dir.string(), {}, dtype);
  adapter->register_module("image_encoder", adapter->image_encoder);
  const CLIPVisionConfig& vc = adapter->image_encoder->vision_model->config;
  const bool plus = adapter->uses_penultimate_hidden_states();
  const int64_t width = plus ? vc.hidden_size() : vc.projection_dim();
  if (width != adapter->image_proj->image_embed_dim)
    throw ModelLoadError("IP-Adapter file '" + file + "' (" + ip_adapter_kind_name(adapter->kind) + ") projects " +
                             (plus ? "hidden states" : "image_embeds") + " of width " +
                             std::to_string(adapter->image_proj->image_embed_dim) + ", but the image encoder in '" +
                             dir.string() + "' gives " + std::to_string(width) + " (" +
                             (plus ? "hidden_size" : "projection_dim") + ")",
                         SourceLoc{file}, {}, "use the image encoder the adapter was trained with; " + hint);
  if (plus && vc.num_hidden_layers() < 2)
    throw ModelLoadError("IP-Adapter Plus file '" + file + "' takes the penultimate hidden states, but the image "
                             "encoder in '" + dir.string() + "' has " + std::to_string(vc.num_hidden_layers()) +
                             " layer",
                         SourceLoc{file}, {}, hint);
  // diffusers uses the pipeline's feature_extractor, or builds CLIPImageProcessor(size=crop=image_size).
  adapter->feature_extractor = !single_file && fs::exists(dir / "preprocessor_config.json")
                                   ? CLIPImageProcessor::from_pretrained(dir.string())
                                   : CLIPImageProcessor().with_size(vc.image_size());
  adapter->eval();
  return adapter;
}

std::pair<at::Tensor, at::Tensor> IPAdapterImpl::encode_image(const at::Tensor& pixel_values) {
  if (!image_encoder)
    throw ExecutionError("IP-Adapter '" + file + "' was loaded without its image encoder (IPAdapterImpl::load)");
  const at::Tensor x = pixel_values.to(image_encoder->dtype());
  if (!uses_penultimate_hidden_states()) {
    at::Tensor embeds = image_encoder->forward(x, /*output_hidden_states=*/false).image_embeds;  // [N, D]
    return {embeds, at::zeros_like(embeds)};
  }
  auto penultimate = [&](const at::Tensor& in) {
    CLIPVisionModelOutput out = image_encoder->forward(in, /*output_hidden_states=*/true);
    return out.hidden_states[out.hidden_states.size() - 2];  // [N, L, H]
  };
  return {penultimate(x), penultimate(at::zeros_like(x))};
}

std::string resolve_ip_adapter_file(const std::string& from) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (from.empty() || fs::exists(from, ec)) return from;
  const size_t colon = from.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == from.size()) return from;
  const std::string joined = (fs::path(from.substr(0, colon)) / from.substr(colon + 1)).string();
  return fs::exists(joined, ec) ? joined : from;
}

void register_ip_adapter(Registry& registry) {
  ComponentTypeInfo info;
  info.type = "IPAdapter";
  info.category = ComponentCategory::Model;
  info.description = "an IP-Adapter .safetensors file (h94/IP-Adapter layout: base or Plus, SD 1.x / SDXL; FILE or "
                     "FOLDER:PATH) with its image encoder folder (config_from; default image_encoder/ beside the file)";
  info.create = [](const ComponentSpec& spec) -> ComponentPtr {
    if (spec.from.empty())
      throw ModelLoadError("component '" + spec.name + "' (IPAdapter) has no file", {}, {},
                           "give the IP-Adapter's .safetensors file");
    return IPAdapterImpl::load(resolve_ip_adapter_file(spec.from), spec.config_from, model_dtype(spec));
  };
  registry.add_component_type(std::move(info));
}

size_t IPAdapterImpl::nbytes() const {
  size_t n = module_nbytes(*this);
  for (const auto& [id, w] : layers) n += w.to_k_ip.nbytes() + w.to_v_ip.nbytes();
  return n;
}

}  // namespace tessera
