#include "models/loading/single_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <mutex>
#include <sstream>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/controlnets/controlnet_model.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/ldm_names.h"
#include "models/loading/model_defaults.h"
#include "models/loading/torch_checkpoint.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

namespace {

constexpr const char* kUNetPrefix = "model.diffusion_model.";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

[[noreturn]] void fail(const std::string& path, const std::string& message, const std::string& hint = {}) {
  throw ModelLoadError(message, SourceLoc{path}, {}, hint);
}

}  // namespace

bool is_single_file_checkpoint_path(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const std::string p = lower(path);
  for (const char* ext : {".safetensors", ".ckpt", ".pt", ".pth"})
    if (ends_with(p, ext)) return true;
  return false;
}

bool SingleFileCheckpoint::is_ignored_key(const std::string& key) {
  // Noise-schedule buffers of LDM's DDPM wrapper, EMA copies and counters, CLIP's non-persistent position ids and
  // OpenCLIP's logit scale / attention mask: no diffusers model tensor corresponds to them.
  static const char* const kExact[] = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "log_one_minus_alphas_cumprod",
                                       "logvar", "lvlb_weights"};
  for (const char* e : kExact)
    if (key == e) return true;
  for (const char* p : {"sqrt_", "posterior_", "model_ema."})
    if (starts_with(key, p)) return true;
  for (const char* s : {".position_ids", "logit_scale", ".attn_mask"})
    if (ends_with(key, s)) return true;
  return false;
}

std::shared_ptr<const SingleFileCheckpoint> SingleFileCheckpoint::open(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const SingleFileCheckpoint>> cache;
  // The last file opened stays open: a run resolves each component's source (detection, configs) before any
  // loads, and a .ckpt would otherwise be read from disk again for every one of them.
  static std::shared_ptr<const SingleFileCheckpoint> last;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(path);
  if (it != cache.end())
    if (auto alive = it->second.lock()) return last = alive;

  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(path, "model file '" + path + "' does not exist");
  if (!S_ISREG(st.st_mode)) fail(path, "'" + path + "' is not a regular file");
  std::shared_ptr<SingleFileCheckpoint> ckpt(new SingleFileCheckpoint());
  ckpt->path_ = path;
  if (is_torch_zip_checkpoint(path)) {
    ckpt->tensors_ = read_torch_checkpoint(path);
  } else {
    const std::string p = lower(path);
    if (ends_with(p, ".ckpt") || ends_with(p, ".pt") || ends_with(p, ".pth") || ends_with(p, ".bin"))
      fail(path, "'" + path + "' is a legacy (pre-zip) PyTorch pickle, which Tessera does not read",
           "convert it to safetensors (e.g. with the `safetensors` Python package: "
           "save_file(torch.load(f)[\"state_dict\"], \"model.safetensors\")) or re-save it with torch >= 1.6");
    ckpt->file_ = std::make_shared<SafetensorsFile>(path);
    for (const auto& name : ckpt->file_->names()) ckpt->tensors_[name] = ckpt->file_->tensor(name);
  }
  cache[path] = ckpt;
  last = ckpt;
  return ckpt;
}

std::vector<std::string> SingleFileCheckpoint::components() const {
  auto has_prefix = [&](const std::string& prefix) {
    auto it = tensors_.lower_bound(prefix);
    return it != tensors_.end() && starts_with(it->first, prefix);
  };
  std::vector<std::string> out;
  if (has_prefix(kUNetPrefix)) out.push_back("unet");
  if (has_prefix("first_stage_model.") || has_prefix("vae.")) out.push_back("vae");
  if (has_prefix("cond_stage_model.") || has_prefix("conditioner.embedders.0.transformer."))
    out.push_back("text_encoder");
  if (has_prefix("conditioner.embedders.1.model.") || has_prefix("conditioner.embedders.0.model."))
    out.push_back("text_encoder_2");
  return out;
}

std::vector<std::string> SingleFileCheckpoint::keys() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

SourceTensor SingleFileCheckpoint::source(const std::string& key) const {
  SourceTensor s;
  s.tensor = tensors_.at(key);
  s.origin = path_ + ": " + key;
  if (file_) {
    auto file = file_;
    s.release = [file, key] { file->release(key); };
  }
  return s;
}

SingleFileDetection SingleFileCheckpoint::detect() const {
  auto has_prefix = [&](const std::string& prefix) {
    auto it = tensors_.lower_bound(prefix);
    return it != tensors_.end() && starts_with(it->first, prefix);
  };
  const std::string looked_for =
      "looked for the UNet under 'model.diffusion_model.' and text encoders under 'cond_stage_model.transformer.' "
      "(SD1), 'cond_stage_model.model.' (SD2), 'conditioner.embedders.0.transformer.' + "
      "'conditioner.embedders.1.model.' (SDXL base), 'conditioner.embedders.0.model.' (SDXL refiner)";
  const std::string hint = "name the family with --set model_type=sd1|sd2|sd2-v|sdxl-base|sdxl-refiner|… (and "
                           "--set config=<a diffusers folder of that family> for its configs)";
  if (!has_prefix(kUNetPrefix)) {
    std::string what;
    if (has_prefix("lora_unet_") || has_prefix("lora_te") ||
        std::any_of(tensors_.begin(), tensors_.end(), [](const auto& kv) {
          return kv.first.find(".lora_down.") != std::string::npos || kv.first.find(".lora_A.") != std::string::npos;
        }))
      what = "a LoRA, not a model checkpoint: pass it with --lora FILE[:WEIGHT] (or a component's `loras:`)";
    else if (has_prefix("control_model.") || has("controlnet_cond_embedding.conv_in.weight") ||
             has_prefix("input_hint_block."))
      what = "a ControlNet, not a pipeline checkpoint";
    else if (has_prefix("double_blocks.") || has_prefix("model.diffusion_model.double_blocks."))
      what = "a FLUX transformer single file, which Tessera loads only as a diffusers folder";
    else if (has_prefix("joint_blocks.") || has_prefix("model.diffusion_model.joint_blocks."))
      what = "an SD3 transformer single file, which Tessera loads only as a diffusers folder";
    else if (has("conv_in.weight") && has_prefix("down_blocks."))
      what = "one diffusers-format model (a component file), not a whole-pipeline checkpoint: use its diffusers "
             "folder";
    else
      what = "not a Stable Diffusion checkpoint in the LDM/SGM layout (" + std::to_string(tensors_.size()) +
             " tensors, none under 'model.diffusion_model.')";
    fail(path_, "'" + path_ + "' is " + what + "; " + looked_for, hint);
  }
  if (has("edm_mean") || has("edm_std")) fail(path_, "'" + path_ + "' is a Playground v2.5 checkpoint (edm_mean), which Tessera does not support");
  if (has(std::string(kUNetPrefix) + "input_blocks.10.0.skip_connection.bias"))
    fail(path_, "'" + path_ + "' is an SD x4 upscaler checkpoint, which Tessera does not support");

  const std::string conv_in = std::string(kUNetPrefix) + "input_blocks.0.0.weight";
  if (!has(conv_in)) fail(path_, "'" + path_ + "' has no '" + conv_in + "' (the UNet's conv_in)", hint);
  const at::Tensor& conv = tensors_.at(conv_in);
  if (conv.dim() != 4) fail(path_, "tensor '" + conv_in + "' has shape " + shape_str(conv.sizes()) + ", expected 4-D");
  const int64_t in_channels = conv.size(1);

  std::string base, evidence;
  const std::string to_k = std::string(kUNetPrefix) + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  if (has(to_k) && tensors_.at(to_k).size(-1) == 1024) {
    base = "sd2";
    evidence = "'" + to_k + "' is 1024 wide (OpenCLIP-H cross attention)";
  } else if (has_prefix("conditioner.embedders.1.model.") && has_prefix("conditioner.embedders.0.transformer.")) {
    base = "sdxl-base";
    evidence = "CLIP-L under 'conditioner.embedders.0.transformer.' and OpenCLIP under 'conditioner.embedders.1.model.'";
  } else if (has_prefix("conditioner.embedders.0.model.") && !has_prefix("conditioner.embedders.1.")) {
    base = "sdxl-refiner";
    evidence = "only OpenCLIP, under 'conditioner.embedders.0.model.'";
  } else if (has_prefix("cond_stage_model.model.")) {
    base = "sd2";
    evidence = "OpenCLIP text encoder under 'cond_stage_model.model.'";
  } else if (has_prefix("cond_stage_model.transformer.")) {
    base = "sd1";
    evidence = "CLIP-L text encoder under 'cond_stage_model.transformer.'";
  } else {
    fail(path_, "cannot tell the family of '" + path_ + "': it has a UNet but no text encoder this loader knows; " +
                    looked_for,
         hint);
  }

  SingleFileDetection d;
  if (in_channels == 9) {
    if (base == "sdxl-refiner") fail(path_, "'" + path_ + "' is a 9-channel (inpainting) refiner, which does not exist in diffusers");
    d.family = (base == "sdxl-base" ? "sdxl" : base) + "-inpaint";
    evidence += "; conv_in has 9 input channels (inpainting)";
  } else if (in_channels == 4) {
    // v-prediction cannot be read from weights: SD2 files get SD2.1-768's v_prediction config, as in diffusers.
    d.family = base == "sd2" ? "sd2-v" : base;
    if (base == "sd2") evidence += "; v-prediction assumed (SD2.1-768, as diffusers does): --set model_type=sd2 for "
                                   "an epsilon (512 base) model";
  } else {
    fail(path_, "'" + path_ + "': conv_in '" + conv_in + "' has " + std::to_string(in_channels) +
                    " input channels; Tessera supports 4 (text2image) and 9 (inpainting) UNets",
         in_channels == 8 ? "8 channels is InstructPix2Pix, which Tessera does not support" : std::string());
  }
  d.evidence = evidence;
  return d;
}

namespace {

struct Converted {
  std::map<std::string, SourceTensor> tensors;
  std::vector<std::string> unmapped;
};

// CLIP-L (transformers' names already): strip the prefix, re-insert `text_model.` for very old files.
void convert_clip_l(const std::map<std::string, at::Tensor>& all, const std::string& prefix,
                    const std::function<SourceTensor(const std::string&)>& source, Converted& out) {
  for (auto it = all.lower_bound(prefix); it != all.end() && starts_with(it->first, prefix); ++it) {
    if (SingleFileCheckpoint::is_ignored_key(it->first)) continue;
    std::string rest = it->first.substr(prefix.size());
    if (!starts_with(rest, "text_model.")) rest = "text_model." + rest;
    out.tensors[rest] = source(it->first);
  }
}

// OpenCLIP (open_clip's names) -> transformers' CLIPTextModel(WithProjection), as convert_open_clip_checkpoint.
void convert_open_clip(const std::map<std::string, at::Tensor>& all, const std::string& prefix, int64_t layers,
                       bool with_projection, const std::function<SourceTensor(const std::string&)>& source,
                       Converted& out) {
  static const std::pair<const char*, const char*> kInner[] = {
      {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."},
      {"mlp.c_proj.", "mlp.fc2."}, {"attn.out_proj.", "self_attn.out_proj."}};
  for (auto it = all.lower_bound(prefix); it != all.end() && starts_with(it->first, prefix); ++it) {
    const std::string& key = it->first;
    if (SingleFileCheckpoint::is_ignored_key(key)) continue;
    const std::string rest = key.substr(prefix.size());
    if (rest == "token_embedding.weight") {
      out.tensors["text_model.embeddings.token_embedding.weight"] = source(key);
    } else if (rest == "positional_embedding") {
      out.tensors["text_model.embeddings.position_embedding.weight"] = source(key);
    } else if (starts_with(rest, "ln_final.")) {
      out.tensors["text_model.final_layer_norm." + rest.substr(9)] = source(key);
    } else if (rest == "text_projection") {
      if (!with_projection) continue;  // SD2's text encoder is a CLIPTextModel: the projection is unused
      SourceTensor s = source(key);
      s.tensor = s.tensor.t().contiguous();  // open_clip computes x @ P; a Linear stores P^T
      s.release = nullptr;
      out.tensors["text_projection.weight"] = s;
    } else if (starts_with(rest, "transformer.resblocks.")) {
      const std::string after = rest.substr(22);  // "N.inner"
      const auto dot = after.find('.');
      int64_t layer = -1;
      try {
        layer = std::stoll(after.substr(0, dot));
      } catch (const std::exception&) {
      }
      if (dot == std::string::npos || layer < 0) {
        out.unmapped.push_back(key);
        continue;
      }
      if (layer >= layers) continue;  // beyond the config's num_hidden_layers (SD2 drops its last layer)
      const std::string inner = after.substr(dot + 1);
      const std::string d = "text_model.encoder.layers." + std::to_string(layer) + ".";
      if (inner == "attn.in_proj_weight" || inner == "attn.in_proj_bias") {
        SourceTensor s = source(key);
        const int64_t rows = s.tensor.size(0);
        if (rows % 3 != 0) {
          out.unmapped.push_back(key + " (in_proj with " + std::to_string(rows) + " rows, not 3 x width)");
          continue;
        }
        const char* part = inner == "attn.in_proj_weight" ? "weight" : "bias";
        const int64_t w = rows / 3;
        const char* names[] = {"q_proj", "k_proj", "v_proj"};
        for (int64_t j = 0; j < 3; ++j) {
          SourceTensor p = s;
          p.tensor = s.tensor.narrow(0, j * w, w);  // rows [j*w, (j+1)*w): q | k | v
          out.tensors[d + "self_attn." + names[j] + "." + part] = p;
        }
        continue;
      }
      bool mapped = false;
      for (const auto& [from, to] : kInner)
        if (starts_with(inner, from)) {
          out.tensors[d + to + inner.substr(std::string(from).size())] = source(key);
          mapped = true;
          break;
        }
      if (!mapped) out.unmapped.push_back(key);
    } else {
      out.unmapped.push_back(key);
    }
  }
}

void convert_with_table(const std::map<std::string, at::Tensor>& all, const std::string& prefix, const NameTable& table,
                        const std::function<SourceTensor(const std::string&)>& source, Converted& out) {
  for (auto it = all.lower_bound(prefix); it != all.end() && starts_with(it->first, prefix); ++it) {
    if (SingleFileCheckpoint::is_ignored_key(it->first)) continue;
    auto name = table.to_diffusers(it->first.substr(prefix.size()));
    if (!name) {
      out.unmapped.push_back(it->first);
      continue;
    }
    out.tensors[*name] = source(it->first);
  }
}

}  // namespace

const at::Tensor& SingleFileCheckpoint::tensor(const std::string& key) const {
  auto it = tensors_.find(key);
  if (it == tensors_.end()) fail(path_, "'" + path_ + "' has no tensor '" + key + "'");
  return it->second;
}

std::map<std::string, SourceTensor> SingleFileCheckpoint::component_tensors(const std::string& component,
                                                                          const nlohmann::json& config,
                                                                          bool with_projection) const {
  auto has_prefix = [&](const std::string& prefix) {
    auto it = tensors_.lower_bound(prefix);
    return it != tensors_.end() && starts_with(it->first, prefix);
  };
  auto src = [this](const std::string& key) { return source(key); };
  Converted out;
  std::string prefix;
  if (component == "unet") {
    prefix = kUNetPrefix;
    convert_with_table(tensors_, prefix, unet_name_table(UNet2DConditionModelConfig::from_json(config, path_ + " (unet config)")),
                       src, out);
  } else if (component == "vae") {
    prefix = has_prefix("first_stage_model.") ? "first_stage_model." : "vae.";
    ModelConfig cfg(config, path_ + " (vae config)");
    const NameTable table = vae_name_table(AutoencoderKLConfig::from_config(cfg));
    convert_with_table(tensors_, prefix, table, src, out);
    // LDM's mid-block attention projections are 1x1 convolutions; diffusers' are Linear.
    for (auto& [name, t] : out.tensors)
      if (name.find("mid_block.attentions.0.to_") != std::string::npos && t.tensor.dim() == 4 &&
          t.tensor.size(2) == 1 && t.tensor.size(3) == 1)
        t.tensor = t.tensor.flatten(1);  // [C, C, 1, 1] -> [C, C] (a view)
  } else if (component == "controlnet") {
    // The original ControlNet layout: `control_model.*` in a full training checkpoint, no prefix in the extracted
    // control_*.safetensors / .pth files.
    prefix = has_prefix("control_model.") ? "control_model." : "";
    ModelConfig cfg(config, path_ + " (controlnet config)");
    const ControlNetModelConfig cn = ControlNetModelConfig::from_config(cfg);
    Converted all;
    convert_with_table(tensors_, prefix, controlnet_name_table(cn.unet, cn.conditioning_embedding_out_channels.size()),
                       src, all);
    out.tensors = std::move(all.tensors);
    // Without a prefix the file may hold other models' keys too (a merged checkpoint): only the ControlNet's count.
    for (auto& key : all.unmapped)
      if (!prefix.empty() || key.rfind("model.", 0) != 0) out.unmapped.push_back(std::move(key));
  } else if (component == "text_encoder" || component == "text_encoder_2") {
    const int64_t layers = config.value("num_hidden_layers", int64_t{12});
    const std::vector<std::string> candidates =
        component == "text_encoder"
            ? std::vector<std::string>{"cond_stage_model.transformer.", "cond_stage_model.model.",
                                       "conditioner.embedders.0.transformer."}
            : std::vector<std::string>{"conditioner.embedders.1.model.", "conditioner.embedders.0.model."};
    for (const auto& c : candidates)
      if (has_prefix(c)) {
        prefix = c;
        break;
      }
    if (prefix.empty()) {
      std::string list;
      for (const auto& c : candidates) list += (list.empty() ? "'" : ", '") + c + "'";
      fail(path_, "'" + path_ + "' has no " + component + " (looked for keys under " + list + ")",
           component == "text_encoder" && has_prefix("conditioner.embedders.0.model.")
               ? "an SDXL refiner has only text_encoder_2: use a recipe for the refiner"
               : std::string());
    }
    if (ends_with(prefix, ".transformer.")) convert_clip_l(tensors_, prefix, src, out);
    else convert_open_clip(tensors_, prefix, layers, with_projection, src, out);
  } else {
    fail(path_, "a single-file checkpoint has no component '" + component +
                    "' (it holds unet, vae, text_encoder and, for SDXL, text_encoder_2; or a controlnet)");
  }
  if (out.tensors.empty() && out.unmapped.empty())
    fail(path_, "'" + path_ + "' has no " + component + " weights (no keys under '" + prefix + "')");
  if (!out.unmapped.empty()) {
    std::ostringstream msg;
    msg << out.unmapped.size() << " key" << (out.unmapped.size() == 1 ? "" : "s") << " of " << component << " in '"
        << path_ << "' map to no diffusers name for this config:";
    for (size_t i = 0; i < std::min<size_t>(out.unmapped.size(), 10); ++i) msg << "\n  - " << out.unmapped[i];
    if (out.unmapped.size() > 10) msg << "\n  … and " << out.unmapped.size() - 10 << " more";
    fail(path_, msg.str(), "the file's layout does not match the config used (model_type / --set config=)");
  }
  return out.tensors;
}

std::string SingleFileOptions::family(const SingleFileCheckpoint& checkpoint) const {
  if (model_type.empty() || model_type == "auto") return checkpoint.detect().family;
  const auto families = shipped_families();
  if (std::find(families.begin(), families.end(), model_type) == families.end()) {
    std::string list;
    for (const auto& f : families) list += (list.empty() ? "" : ", ") + f;
    throw InputError("model_type '" + model_type + "' is not a known family (" + list + ")", {}, {},
                     did_you_mean(model_type, families));
  }
  return model_type;
}

std::string SingleFileOptions::config_dir(const SingleFileCheckpoint& checkpoint) const {
  if (!config_folder.empty()) {
    read_model_index(config_folder);  // ModelLoadError naming it when it is not a diffusers folder
    return config_folder;
  }
  return shipped_family_dir(family(checkpoint));
}

}  // namespace tessera
