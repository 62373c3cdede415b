// Single-file conversion and fused-LoRA component cases (manifest_formats.json).
#include "tools/parity/format_cases.h"

#include <filesystem>
#include <map>
#include <set>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/adapters/lora.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/single_file.h"
#include "models/loading/state_dict.h"
#include "models/text/clip_text_model.h"
#include "models/unet/unet_2d_condition.h"
#include "tools/parity/component_cases.h"
#include "tools/parity/parity.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

std::string models_path(const ParityCase& c, const char* param) {
  if (!c.params.contains(param) || !c.params[param].is_string())
    throw ValidationError("case " + c.name + ": params." + param + " is missing");
  return (fs::path(c.models_dir) / c.params[param].get<std::string>()).string();
}

/// "unet.down_blocks.0.resnets.0.conv1.weight (reshape …)" -> {"unet", "down_blocks.0.resnets.0.conv1.weight"}.
std::pair<std::string, std::string> split_target(std::string target) {
  const auto space = target.find(' ');
  if (space != std::string::npos) target.resize(space);
  const auto dot = target.find('.');
  if (dot == std::string::npos) throw ValidationError("key_map target '" + target + "' has no component");
  return {target.substr(0, dot), target.substr(dot + 1)};
}

const char* weights_name(const std::string& component) {
  return component.rfind("text_encoder", 0) == 0 ? kTransformersWeightsName : kDiffusersWeightsName;
}

ParityResult run_single_file_convert_case(const ParityCase& c) {
  const std::string file = models_path(c, "file");
  const std::string folder = models_path(c, "config_folder");
  auto ckpt = SingleFileCheckpoint::open(file);
  ParityComparison cmp(c.tolerance);
  const bool half_file = c.params.contains("file_dtypes") && c.params["file_dtypes"].size() == 1 &&
                         c.params["file_dtypes"][0] == "float16";

  // Detection: diffusers' name for the family is a prefix of Tessera's (sd1, sd2 -> sd2-v, sdxl -> sdxl-base).
  const std::string family = c.params.value("family", std::string());
  const SingleFileDetection d = ckpt->detect();
  if (!family.empty() && d.family.rfind(family, 0) != 0)
    cmp.fail("detected family '" + d.family + "' (" + d.evidence + "), the case says '" + family + "'");

  std::map<std::string, std::map<std::string, SourceTensor>> converted;
  std::map<std::string, std::map<std::string, at::Tensor>> reference;
  auto component = [&](const std::string& name) -> std::map<std::string, SourceTensor>& {
    auto it = converted.find(name);
    if (it != converted.end()) return it->second;
    const nlohmann::json config = read_component_config(folder, name);
    converted[name] = ckpt->component_tensors(name, config, name == "text_encoder_2");
    reference[name] = read_safetensors_files(resolve_weight_files(component_dir(folder, name), weights_name(name)));
    // Every converted tensor has a folder tensor of the same shape and every folder tensor was converted.
    for (const auto& [key, t] : converted[name])
      if (!reference[name].count(key) && key.find("position_ids") == std::string::npos)
        cmp.fail(name + ": converted tensor '" + key + "' is not in the folder");
    for (const auto& [key, t] : reference[name])
      if (!converted[name].count(key) && key.find("position_ids") == std::string::npos)
        cmp.fail(name + ": folder tensor '" + key + "' was not converted from the file");
    return converted[name];
  };
  auto check = [&](const std::string& file_key, const std::string& target) {
    const auto [comp, key] = split_target(target);
    auto& tensors = component(comp);
    auto it = tensors.find(key);
    if (it == tensors.end()) {
      cmp.fail("file key '" + file_key + "' should become " + comp + "." + key + ", which the conversion lacks");
      return;
    }
    at::Tensor expected = reference[comp].at(key);
    at::Tensor got = it->second.tensor;
    if (half_file) {
      expected = expected.to(at::kHalf).to(at::kFloat);  // the folder's values as the fp16 file holds them
      got = got.to(at::kFloat);
    }
    cmp.compare(comp + "." + key, got, expected);
  };
  // params.key_map: file key -> target(s); a string refers to another case's map (the same file in another
  // dtype or container), whose outcome the full comparison below checks as well.
  if (c.params.contains("key_map") && c.params["key_map"].is_object())
    for (auto it = c.params["key_map"].begin(); it != c.params["key_map"].end(); ++it) {
      if (it.value().is_array())
        for (const auto& t : it.value()) check(it.key(), t.get<std::string>());
      else
        check(it.key(), it.value().get<std::string>());
    }
  else if (!c.params.contains("key_map") || !c.params["key_map"].is_string())
    throw ValidationError("case " + c.name + ": params.key_map is missing");
  if (!c.params.contains("per_component") || !c.params["per_component"].is_object())
    throw ValidationError("case " + c.name + ": params.per_component is missing");
  std::set<std::string> used;  // file keys that landed in a model tensor
  const std::string origin_prefix = file + ": ";
  for (auto it = c.params["per_component"].begin(); it != c.params["per_component"].end(); ++it) {
    const std::string& comp = it.key();
    const size_t want = it.value().value("tensors", size_t{0});
    size_t have = 0;
    for (const auto& [key, t] : component(comp)) {
      if (key.find("position_ids") != std::string::npos) continue;
      ++have;
      if (t.origin.rfind(origin_prefix, 0) == 0) used.insert(t.origin.substr(origin_prefix.size()));
      // Every converted tensor equals the folder's (fp16 file: the folder's rounded through fp16).
      at::Tensor expected = reference[comp].count(key) ? reference[comp].at(key) : at::Tensor();
      if (!expected.defined()) continue;  // reported by component()
      at::Tensor got = t.tensor;
      if (half_file) {
        expected = expected.to(at::kHalf).to(at::kFloat);
        got = got.to(at::kFloat);
      }
      cmp.compare(comp + "." + key, got, expected);
    }
    if (want && have != want)
      cmp.fail(comp + ": " + std::to_string(have) + " tensors converted, diffusers has " + std::to_string(want));
  }
  if (c.params.contains("ignored_file_keys"))
    for (const auto& k : c.params["ignored_file_keys"])
      if (used.count(k.get<std::string>()))
        cmp.fail("file key '" + k.get<std::string>() + "' lands in no model tensor in diffusers, but Tessera loads it");
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const auto [comp, key] = split_target(it.key());
    auto& tensors = component(comp);
    if (!tensors.count(key)) {
      cmp.fail("expected tensor '" + it.key() + "' was not converted");
      continue;
    }
    cmp.compare(it.key(), tensors.at(key).tensor.to(at::kFloat), required_parity_tensor(c, it.key()));
  }
  return cmp.result();
}

at::Tensor timestep_tensor(const nlohmann::json& t) {
  return t.is_number_integer() ? at::scalar_tensor(t.get<int64_t>(), at::kLong) : at::scalar_tensor(t.get<double>(), at::kFloat);
}

ParityResult run_lora_fused_case(const ParityCase& c) {
  c10::InferenceMode guard;
  const std::string folder = parity_model_folder(c);
  const LoraFile lora = LoraFile::open(models_path(c, "lora_file"));
  const double weight = c.params.value("lora_scale", 1.0);
  ParityComparison cmp(c.tolerance);

  const nlohmann::json unet_config = read_component_config(folder, "unet");
  auto unet = UNet2DConditionModelImpl::from_pretrained(folder, "unet");
  const at::Tensor sample = required_parity_tensor(c, "sample"), ehs = required_parity_tensor(c, "encoder_hidden_states");
  UNet2DConditionInputs in;
  if (c.inputs.contains("text_embeds")) in.text_embeds = required_parity_tensor(c, "text_embeds");
  if (c.inputs.contains("time_ids")) in.time_ids = required_parity_tensor(c, "time_ids");
  const at::Tensor t = timestep_tensor(c.params.at("timestep"));
  const at::Tensor base = unet->forward(sample, t, ehs, in);
  cmp.compare("unet_out_base", base, required_parity_tensor(c, "unet_out_base"));
  FusedLoras fused = fuse_loras(*unet, "unet", {{&lora, weight}}, &unet_config);
  cmp.compare("unet_out", unet->forward(sample, t, ehs, in), required_parity_tensor(c, "unet_out"));

  std::map<std::string, std::shared_ptr<torch::nn::Module>> encoders;
  std::map<std::string, CLIPTextModelOutput> te_out;
  auto encoder = [&](const std::string& name) {
    if (te_out.count(name)) return;
    const at::Tensor ids = required_parity_tensor(c, name == "text_encoder" ? "input_ids" : "input_ids_2");
    if (name == "text_encoder_2") {
      auto te = load_clip_text_model_with_projection(folder, name);
      fuse_loras(*te, name, {{&lora, weight}});
      te_out[name] = te->forward(ids, {}, true);
      encoders[name] = te;
    } else {
      auto te = load_clip_text_model(folder, name);
      fuse_loras(*te, name, {{&lora, weight}});
      te_out[name] = te->forward(ids, {}, true);
      encoders[name] = te;
    }
  };
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const std::string& name = it.key();
    if (name == "unet_out" || name == "unet_out_base") continue;
    if (name.rfind("fused.", 0) == 0) {
      const auto [comp, key] = split_target(name.substr(6));
      torch::nn::Module* m = nullptr;
      if (comp == "unet") m = unet.get();
      else {
        encoder(comp);
        m = encoders.at(comp).get();
      }
      auto params = m->named_parameters(true);
      if (!params.contains(key)) {
        cmp.fail("the model has no parameter '" + key + "' (" + name + ")");
        continue;
      }
      cmp.compare(name, params[key], required_parity_tensor(c, name));
      continue;
    }
    std::string comp, what;
    if (name == "text_encoder_last_hidden_state") comp = "text_encoder", what = "last_hidden_state";
    else if (name == "te1_hidden_states_penultimate") comp = "text_encoder", what = "penultimate";
    else if (name == "te2_hidden_states_penultimate") comp = "text_encoder_2", what = "penultimate";
    else if (name == "te2_text_embeds") comp = "text_encoder_2", what = "text_embeds";
    if (comp.empty()) {
      cmp.fail("expected tensor '" + name + "' is not known to the LoRA runner");
      continue;
    }
    encoder(comp);
    const CLIPTextModelOutput& o = te_out.at(comp);
    const at::Tensor got = what == "last_hidden_state" ? o.last_hidden_state
                           : what == "text_embeds"     ? o.text_embeds
                                                       : o.hidden_states.end()[-2];
    cmp.compare(name, got, required_parity_tensor(c, name));
  }
  // Unfusing restores the base model exactly (what a kept-loaded pipeline relies on to switch LoRAs).
  fused.unfuse();
  ParityComparison exact(nlohmann::json{{"exact", true}});
  if (!exact.compare("unet_out after unfuse", unet->forward(sample, t, ehs, in), base))
    cmp.fail("unfusing the LoRA did not restore the base UNet: " + exact.result().reason);
  return cmp.result();
}

}  // namespace

void register_format_case_runners() {
  register_component_case_prefix_runner("single_file_", run_single_file_convert_case);
  register_component_case_prefix_runner("lora_", run_lora_fused_case);
}

}  // namespace tessera
