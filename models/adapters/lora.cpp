#include "models/adapters/lora.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/loading/ldm_names.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& x) {
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// Key prefixes of each component (kohya, then diffusers/PEFT).
const std::vector<std::pair<std::string, std::string>>& component_prefixes() {
  static const std::vector<std::pair<std::string, std::string>> kPrefixes = {
      {"lora_unet_", "unet"},           {"lora_te1_", "text_encoder"},  {"lora_te2_", "text_encoder_2"},
      {"lora_te_", "text_encoder"},     {"unet.", "unet"},              {"text_encoder_2.", "text_encoder_2"},
      {"text_encoder.", "text_encoder"}};
  return kPrefixes;
}

std::string owner_of(const std::string& module) {
  for (const auto& [prefix, component] : component_prefixes())
    if (starts_with(module, prefix)) return component;
  return {};
}

// Tensor suffixes by role. "down" = A, "up" = B.
struct Suffix {
  const char* text;
  char role;  // 'd' down, 'u' up, 'a' alpha
};
const Suffix kSuffixes[] = {{".lora_down.weight", 'd'}, {".lora_up.weight", 'u'}, {".lora_A.weight", 'd'},
                            {".lora_B.weight", 'u'},    {".alpha", 'a'},          {".lora.down.weight", 'd'},
                            {".lora.up.weight", 'u'}};

// Formats Tessera refuses, by the tensor names that give them away.
const std::pair<const char*, const char*> kUnsupported[] = {
    {".hada_w1_a", "LoHa (LyCORIS)"}, {".hada_w1_b", "LoHa (LyCORIS)"}, {".lokr_w1", "LoKr (LyCORIS)"},
    {".lokr_w1_a", "LoKr (LyCORIS)"}, {".lokr_w2", "LoKr (LyCORIS)"},   {".dora_scale", "DoRA"},
    {".lora_magnitude_vector", "DoRA"}, {".diff", "a full weight difference (LyCORIS diff)"},
    {".diff_b", "a full bias difference (LyCORIS diff)"}, {".lora_mid.weight", "LoCon with CP decomposition (lora_mid)"}};

// diffusers' older attention-processor names: `…attn1.processor.to_q_lora.down.weight` -> `…attn1.to_q`.
std::string normalise_processor_name(std::string module) {
  const auto p = module.find(".processor.");
  if (p == std::string::npos) return module;
  std::string tail = module.substr(p + 11);  // "to_q_lora"
  if (ends_with(tail, "_lora")) tail.resize(tail.size() - 5);
  if (tail == "to_out") tail = "to_out.0";
  return module.substr(0, p + 1) + tail;
}

double alpha_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& path,
                           const std::string& module, double rank) {
  auto it = metadata.find("lora_adapter_metadata");
  if (it == metadata.end()) return rank;
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object())
    throw ModelLoadError("LoRA metadata 'lora_adapter_metadata' is not a JSON object", SourceLoc{path});
  // Per component ({"unet": {...}}) or flat.
  for (const auto& [component, prefix_len] : {std::pair<std::string, size_t>{"unet", 5}, {"text_encoder", 13},
                                              {"text_encoder_2", 15}})
    if (j.contains(component) && j[component].is_object() && starts_with(module, component + ".")) {
      j = j[component];
      break;
    }
  if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
    for (auto p = j["alpha_pattern"].begin(); p != j["alpha_pattern"].end(); ++p)
      if (p.value().is_number() && ends_with(module, p.key())) return p.value().get<double>();
  if (j.contains("lora_alpha") && j["lora_alpha"].is_number()) return j["lora_alpha"].get<double>();
  return rank;
}

}  // namespace

LoraFile LoraFile::open(const std::string& path) {
  {
    std::string lower = path;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* ext : {".pt", ".pth", ".ckpt", ".bin"})
      if (ends_with(lower, ext))
        throw ModelLoadError("LoRA '" + path + "' is a PyTorch pickle, which Tessera does not read as a LoRA",
                             SourceLoc{path}, {}, "convert it to safetensors (safetensors.torch.save_file)");
  }
  SafetensorsFile file(path);
  LoraFile out;
  out.path_ = path;
  struct Parts {
    at::Tensor down, up, alpha;
    std::string down_key, up_key;
  };
  std::map<std::string, Parts> parts;
  std::vector<std::string> foreign;
  for (const auto& key : file.names()) {
    for (const auto& [suffix, what] : kUnsupported)
      if (ends_with(key, suffix))
        throw ModelLoadError("LoRA '" + path + "' is " + std::string(what) + " (tensor '" + key +
                                 "'), which Tessera does not support",
                             SourceLoc{path}, {}, "Tessera fuses LoRA and LoCon files (kohya, diffusers/PEFT)");
    const Suffix* match = nullptr;
    for (const auto& s : kSuffixes)
      if (ends_with(key, s.text)) {
        match = &s;
        break;
      }
    if (!match) {
      foreign.push_back(key);
      continue;
    }
    std::string module = key.substr(0, key.size() - std::string(match->text).size());
    module = normalise_processor_name(module);
    if (owner_of(module).empty()) {
      foreign.push_back(key);
      continue;
    }
    Parts& p = parts[module];
    at::Tensor t = file.tensor(key);
    if (match->role == 'a') p.alpha = t;
    else if (match->role == 'd') p.down = t, p.down_key = key;
    else p.up = t, p.up_key = key;
  }
  if (!foreign.empty()) {
    std::ostringstream msg;
    msg << foreign.size() << " tensor" << (foreign.size() == 1 ? "" : "s") << " of LoRA '" << path
        << "' belong to no LoRA module of a UNet or text encoder:";
    for (size_t i = 0; i < std::min<size_t>(foreign.size(), 5); ++i) msg << "\n  - " << foreign[i];
    if (foreign.size() > 5) msg << "\n  … and " << foreign.size() - 5 << " more";
    throw ModelLoadError(msg.str(), SourceLoc{path}, {},
                         "expected kohya (lora_unet_…/lora_te_….lora_down.weight, .lora_up.weight, .alpha) or "
                         "diffusers/PEFT (unet.….lora_A.weight, .lora_B.weight) names");
  }
  if (parts.empty()) throw ModelLoadError("LoRA '" + path + "' has no LoRA modules", SourceLoc{path});
  for (auto& [name, p] : parts) {
    if (!p.down.defined() || !p.up.defined())
      throw ModelLoadError("LoRA module '" + name + "' in '" + path + "' has " +
                               (p.down.defined() ? "a down (A) but no up (B)" : "an up (B) but no down (A)") + " tensor",
                           SourceLoc{path});
    if (p.down.dim() < 2 || p.up.dim() < 2 || (p.down.dim() != 2 && p.down.dim() != 4) || p.up.dim() != p.down.dim())
      throw ModelLoadError("LoRA module '" + name + "' in '" + path + "': down " + shape_str(p.down.sizes()) + " and up " +
                               shape_str(p.up.sizes()) + " are not a Linear (2-D) or Conv2d (4-D) pair",
                           SourceLoc{path});
    if (p.up.dim() == 4 && (p.up.size(2) != 1 || p.up.size(3) != 1))
      throw ModelLoadError("LoRA module '" + name + "' in '" + path + "': up " + shape_str(p.up.sizes()) +
                               " must be a 1x1 kernel",
                           SourceLoc{path});
    const int64_t rank = p.down.size(0);
    if (p.up.size(1) != rank)
      throw ModelLoadError("LoRA module '" + name + "' in '" + path + "': the rank differs between down (" +
                               p.down_key + " " + shape_str(p.down.sizes()) + ", rank " + std::to_string(rank) +
                               ") and up (" + p.up_key + " " + shape_str(p.up.sizes()) + ", rank " +
                               std::to_string(p.up.size(1)) + ")",
                           SourceLoc{path});
    Module m;
    m.name = name;
    m.down = p.down.to(at::kFloat);  // float16/bfloat16 files: upcast first, as peft merges in float32
    m.up = p.up.to(at::kFloat);
    m.rank = rank;
    if (p.alpha.defined()) {
      if (p.alpha.numel() != 1)
        throw ModelLoadError("LoRA alpha of '" + name + "' in '" + path + "' has " + std::to_string(p.alpha.numel()) +
                                 " elements, expected 1",
                             SourceLoc{path});
      m.alpha = p.alpha.to(at::kDouble).item<double>();
    } else {
      m.alpha = alpha_from_metadata(file.metadata(), path, name, static_cast<double>(rank));
    }
    out.modules_.push_back(std::move(m));
  }
  return out;
}

std::vector<const LoraFile::Module*> LoraFile::modules_for(const std::string& component) const {
  std::vector<const Module*> out;
  for (const auto& m : modules_)
    if (owner_of(m.name) == component) out.push_back(&m);
  return out;
}

void FusedLoras::unfuse() {
  torch::NoGradGuard no_grad;
  for (auto& [param, original] : patched_) param.set_data(original);
  patched_.clear();
}

namespace {

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// Every name a LoRA file may give each Linear/Conv2d weight of `model`, as component `component`.
std::map<std::string, std::string> lora_names(torch::nn::Module& model, const std::string& component,
                                              const nlohmann::json* unet_config) {
  std::optional<NameTable> sgm;
  if (component == "unet" && unet_config)
    sgm = unet_name_table(UNet2DConditionModelConfig::from_json(*unet_config, "unet config"));
  std::vector<std::string> kohya;
  if (component == "unet") kohya = {"lora_unet_"};
  else if (component == "text_encoder") kohya = {"lora_te_", "lora_te1_"};
  else kohya = {"lora_te2_"};
  std::map<std::string, std::string> names;  // LoRA module name -> model module path
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    const auto& m = item.value();
    if (!m->as<torch::nn::Linear>() && !m->as<torch::nn::Conv2d>()) continue;
    for (const auto& k : kohya) names[k + underscored(path)] = path;
    if (sgm)
      if (auto ldm = sgm->to_ldm(path)) names["lora_unet_" + underscored(*ldm)] = path;
    names[component + "." + path] = path;
  }
  return names;
}

// The module's factors as 2-D matrices with weight.flatten(1) == up2d @ down2d in layout: Linear [out, r] @ [r, in];
// 1x1 conv the same on the squeezed kernels; k x k conv [out, r] @ [r, in*k*k], since
// delta[o,i,y,x] = sum_r up[o,r] down[r,i,y,x] (peft computes it as conv2d(down^T, up)^T: the same sums).
// A Linear LoRA on a 1x1 conv weight or the reverse fits too (SD1's proj_in/proj_out): same numbers, other view.
std::pair<at::Tensor, at::Tensor> lora_factors(const LoraFile::Module& m, const at::Tensor& weight,
                                               const std::string& where) {
  const at::Tensor up = m.up.flatten(1), down = m.down.flatten(1);
  const bool weight_1x1 = weight.dim() == 2 || (weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1);
  const bool lora_1x1 = m.down.dim() == 2 || (m.down.size(2) == 1 && m.down.size(3) == 1);
  bool fits = weight.dim() >= 2 && up.size(0) == weight.size(0) && down.size(1) * weight.size(0) == weight.numel();
  if (fits && !(weight_1x1 && lora_1x1))
    fits = weight.dim() == 4 && m.down.dim() == 4 && weight.size(2) == m.down.size(2) && weight.size(3) == m.down.size(3);
  if (!fits) {
    std::vector<int64_t> delta_shape{m.up.size(0), m.down.size(1)};
    for (int64_t d = 2; d < m.down.dim(); ++d) delta_shape.push_back(m.down.size(d));
    throw ModelLoadError("LoRA module '" + m.name + "' gives a delta of shape " + shape_str(delta_shape) + " for '" +
                             where + "', whose weight is " + shape_str(weight.sizes()),
                         {}, {}, "the LoRA is for a model of another size or family");
  }
  return {up, down};
}

}  // namespace

FusedLoras fuse_loras(torch::nn::Module& model, const std::string& component,
                      const std::vector<std::pair<const LoraFile*, double>>& loras, const nlohmann::json* unet_config) {
  torch::NoGradGuard no_grad;
  FusedLoras fused;
  if (loras.empty()) return fused;
  const auto names = lora_names(model, component, unet_config);
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  for (const auto& item : model.named_modules("", false)) modules[item.key()] = item.value();

  // Accumulated in float32 per weight, in the order of `loras`, then written back once.
  std::map<std::string, at::Tensor> sums;  // module path -> float32 fused weight
  std::vector<std::string> order;
  for (const auto& [file, weight] : loras) {
    std::vector<std::string> unmatched;
    for (const LoraFile::Module* m : file->modules_for(component)) {
      auto it = names.find(m->name);
      if (it == names.end()) {
        unmatched.push_back(m->name);
        continue;
      }
      const std::string& path = it->second;
      at::Tensor w = modules.at(path)->named_parameters(false)["weight"];
      const std::string where = component + "." + path + ".weight";
      std::pair<at::Tensor, at::Tensor> factors;
      try {
        factors = lora_factors(*m, w, where);
      } catch (const ModelLoadError& e) {
        throw ModelLoadError(e.message() + " (LoRA '" + file->path() + "')", SourceLoc{file->path()}, {}, e.hint());
      }
      // peft: scale_layer (one adapter, s *= weight unless 1) or set_scale (several: weight * alpha / rank).
      double s;
      if (loras.size() == 1) {
        s = m->alpha / static_cast<double>(m->rank);
        if (weight != 1.0) s *= weight;
      } else {
        s = weight * m->alpha / static_cast<double>(m->rank);
      }
      // W + s * (up @ down) in float32, as one GEMM into the fused copy (memory-bound: one pass over W).
      auto sum = sums.find(path);
      if (sum == sums.end()) {
        at::Tensor fused = at::addmm(w.to(at::kFloat).reshape({w.size(0), -1}), factors.first, factors.second, 1, s);
        sum = sums.emplace(path, fused.view(w.sizes())).first;
        order.push_back(path);
      } else {
        sum->second.view({w.size(0), -1}).addmm_(factors.first, factors.second, 1, s);
      }
    }
    if (!unmatched.empty()) {
      std::ostringstream msg;
      msg << unmatched.size() << " " << component << " module" << (unmatched.size() == 1 ? "" : "s") << " of LoRA '"
          << file->path() << "' match no Linear or Conv2d of the model:";
      for (size_t i = 0; i < std::min<size_t>(unmatched.size(), 5); ++i) msg << "\n  - " << unmatched[i];
      if (unmatched.size() > 5) msg << "\n  … and " << unmatched.size() - 5 << " more";
      throw ModelLoadError(msg.str(), SourceLoc{file->path()}, {},
                           "is the LoRA for this model family (SD1 / SD2 / SDXL)?");
    }
  }
  for (const auto& path : order) {
    at::Tensor w = modules.at(path)->named_parameters(false)["weight"];
    fused.patched_.emplace_back(w, w.data());
    w.set_data(sums.at(path).to(w.scalar_type()));
  }
  return fused;
}

double parse_lora_weight(const LoraSpec& lora) {
  char* end = nullptr;
  const double w = std::strtod(lora.weight.c_str(), &end);
  if (lora.weight.empty() || *end != '\0' || !std::isfinite(w))
    throw InputError("LoRA weight '" + lora.weight + "' of '" + lora.file + "' is not a number", {}, {},
                     "write FILE:0.8 (--lora) or weight: 0.8 (recipe)");
  return w;
}

void fuse_component_loras(torch::nn::Module& model, const ComponentSpec& spec, const nlohmann::json& config) {
  if (spec.loras.empty()) return;
  std::set<std::string> seen;
  std::vector<LoraFile> files;
  std::vector<double> weights;
  files.reserve(spec.loras.size());
  for (const auto& l : spec.loras) {
    if (!seen.insert(l.file).second)
      throw InputError("LoRA '" + l.file + "' is given twice for component '" + spec.name + "'", {}, {},
                       "give each LoRA once, with the summed weight if that is what you want");
    weights.push_back(parse_lora_weight(l));
    files.push_back(LoraFile::open(l.file));
  }
  std::vector<std::pair<const LoraFile*, double>> loras;
  for (size_t i = 0; i < files.size(); ++i) loras.emplace_back(&files[i], weights[i]);
  const std::string component = spec.subfolder.empty() ? spec.name : spec.subfolder;
  fuse_loras(model, component, loras, component == "unet" ? &config : nullptr);  // originals dropped: never unfused
}

}  // namespace tessera
