// The "pipeline" cases (see the parity README: sd_txt2img_*, sd_img2img_*, sd_inpaint_*, sdxl_*).
#include "tools/parity/pipeline_cases.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include <tessera/builtins.h>

#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"
#include "tools/parity/component_cases.h"

namespace fs = std::filesystem;

namespace tessera {

Value json_to_value(const nlohmann::json& j) {
  if (j.is_boolean()) return Value(j.get<bool>());
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_number()) return Value(j.get<double>());
  if (j.is_string()) return Value(j.get<std::string>());
  if (j.is_array()) {
    std::vector<double> v;
    for (const auto& e : j) {
      if (!e.is_number()) throw ValidationError("config list with a non-number element: " + j.dump());
      v.push_back(e.get<double>());
    }
    return Value(v);
  }
  if (j.is_object()) {
    ValueMap m;
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!it.value().is_null()) m[it.key()] = json_to_value(it.value());
    return Value(m);
  }
  return Value();
}

const Registry& full_registry() {
  static const Registry r = [] {
    Registry x;
    register_builtins(x);
    return x;
  }();
  return r;
}

namespace {

std::vector<int64_t> int_list(const nlohmann::json& j) {
  std::vector<int64_t> v;
  for (const auto& e : j) v.push_back(e.get<int64_t>());
  return v;
}

std::mutex& family_mu() {
  static std::mutex m;
  return m;
}
std::map<std::string, ParityCaseRunner>& family_runners() {
  static std::map<std::string, ParityCaseRunner> r;
  return r;
}

ParityResult run_sd_pipeline_case(const ParityCase& c);

}  // namespace

void register_pipeline_family_runner(const std::string& model_prefix, ParityCaseRunner runner) {
  std::lock_guard<std::mutex> lock(family_mu());
  family_runners()[model_prefix] = std::move(runner);
}

ParityResult run_pipeline_case(const ParityCase& c) {
  const std::string model = c.params.value("model", std::string("tiny-sd"));
  ParityCaseRunner family;
  {
    std::lock_guard<std::mutex> lock(family_mu());
    size_t best = 0;
    for (const auto& [prefix, runner] : family_runners())
      if (model.rfind(prefix, 0) == 0 && prefix.size() > best) {
        best = prefix.size();
        family = runner;
      }
  }
  return family ? family(c) : run_sd_pipeline_case(c);
}

std::string find_recipes_dir(const std::string& start_dir) {
  if (const char* env = std::getenv("TESSERA_RECIPES_DIR"); env && *env) return env;
  for (fs::path start : {fs::absolute(start_dir), fs::current_path()})
    for (fs::path p = start; !p.empty(); p = p.parent_path()) {
      if (fs::exists(p / "recipes" / "sd" / "auto.yaml")) return (p / "recipes").string();
      if (p == p.parent_path()) break;
    }
  // An installed tessera: <prefix>/bin/tessera → <prefix>/share/tessera/recipes.
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = exe.parent_path().parent_path() / "share" / "tessera" / "recipes";
    if (fs::exists(installed / "sd" / "auto.yaml")) return installed.string();
  }
  throw InputError("cannot find Tessera's recipes/ folder above '" + start_dir + "' or the working directory", {}, {},
                   "set TESSERA_RECIPES_DIR to the recipes folder of a Tessera checkout or install");
}

namespace {
ParityResult run_sd_pipeline_case(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  const std::string model = p.value("model", std::string("tiny-sd"));
  // Single-file cases name the file and the diffusers folder its configs come from (diffusers' config=).
  const std::string single_file = p.value("file", std::string());
  const std::string config_folder = p.value("config_folder", std::string());
  const bool sdxl = (single_file.empty() ? model : config_folder).find("sdxl") != std::string::npos;
  const std::string recipe_path =
      (fs::path(find_recipes_dir(c.models_dir)) / (sdxl ? "sdxl" : "sd") / "auto.yaml").string();
  Recipe recipe = load_recipe(recipe_path);

  // Scheduler and guider as the case configures them (the recipe's defaults otherwise).
  if (p.contains("scheduler_class")) {
    // The recipe's `type: ${scheduler}` stays; the class comes in as the `scheduler` input (set below), and the
    // case's full config replaces the model folder's scheduler_config.json.
    RecipeComponent& sc = recipe.components.at("scheduler");
    for (auto& input : recipe.inputs)
      if (input.name == "scheduler") input.default_value = Value(p["scheduler_class"].get<std::string>());
    sc.spec.from.clear();
    sc.spec.subfolder.clear();
    sc.spec.creation = Creation::FromConfig;
    if (p.contains("scheduler_config")) sc.spec.config = json_to_value(p["scheduler_config"]);
  }
  if (p.contains("guider")) {
    RecipeComponent g;
    g.spec.name = "guider";
    g.spec.type = p["guider"].get<std::string>();
    g.spec.creation = Creation::FromConfig;
    if (p.contains("guider_config")) g.spec.config = json_to_value(p["guider_config"]);
    g.loc = SourceLoc{c.file};
    recipe.components["guider"] = g;
  }
  if (sdxl && p.contains("force_zeros_for_empty_prompt") && p["force_zeros_for_empty_prompt"].is_boolean())
    recipe.configs["force_zeros_for_empty_prompt"] =
        RecipeConfig{Value(p["force_zeros_for_empty_prompt"].get<bool>()), SourceLoc{c.file}};
  // A parameter the runner does not know would be silently ignored: refuse it instead.
  static const std::set<std::string> kKnown = {
      "model", "prompt", "negative_prompt", "prompt_2", "negative_prompt_2", "num_inference_steps",
      "guidance_scale", "guidance_rescale", "height", "width", "strength", "clip_skip", "num_images_per_prompt",
      "original_size", "crops_coords_top_left", "target_size", "negative_original_size",
      "negative_crops_coords_top_left", "negative_target_size", "eta", "generator_seed", "latents_seed",
      "output_type", "scheduler_class", "scheduler_config", "guider", "guider_config", "force_zeros_for_empty_prompt",
      "num_random_draws", "random_draw_order", "max_abs_diff_vs_standard_pipeline", "equals_standard_pipeline",
      // single-file and LoRA cases (manifest_formats.json); the max_abs_diff_* are diffusers' own measurements
      "file", "config_folder", "loras", "lora_fuse_mode", "lora_scale_rule", "scale_formula", "diffusers_equivalent",
      "max_abs_diff_vs_folder_pipeline", "max_abs_diff_vs_float32_folder_pipeline", "max_abs_diff_vs_no_lora",
      // ControlNet cases (manifest_control.json); keep / per-step scales / guess scales are what diffusers derived
      // from the parameters above (Tessera derives its own), the rest are diffusers' own measurements
      "controlnet", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end", "guess_mode",
      "controlnet_keep", "conditioning_scale_per_step", "guess_mode_scales", "max_abs_diff_vs_conditioning_scale_0",
      "controlnet_calls_per_step", "controlnet_batch_per_call", "control_image_processor_vae_scale_factor",
      "num_steps_run", "control_image_size_in", "standard_pipeline_case", "controlnet_batch",
      // IP-Adapter cases: the adapter file, its image encoder and scale are passed on; ip_layer_ids (the UNet
      // layers diffusers assigned) is checked by the component cases; feature_extractor describes what the
      // classic loader builds (CLIPImageProcessor(size=crop=image_size)), which Tessera builds too
      "ip_adapter", "image_encoder", "ip_adapter_scale", "ip_layer_ids", "image_size_hw", "variant",
      "max_abs_diff_vs_scale_0", "feature_extractor", "feature_extractor_default"};
  for (auto it = p.begin(); it != p.end(); ++it)
    if (!kKnown.count(it.key()) && !it.value().is_null())
      throw ValidationError("pipeline case parameter '" + it.key() + "' is not supported by the pipeline runner");
  if (p.contains("scheduler_config") && !p.contains("scheduler_class"))
    throw ValidationError("scheduler_config without scheduler_class: the runner needs the class");
  // fuse_lora (one LoRA, weight as lora_scale) and set_adapters (several, per-adapter weights) are both fused
  // into the weights: what Tessera does (the scale rule for one vs several LoRAs is in models/adapters/lora.h).
  if (p.contains("lora_fuse_mode") && p["lora_fuse_mode"] != "fuse_lora" && p["lora_fuse_mode"] != "set_adapters")
    throw ValidationError("lora_fuse_mode " + p["lora_fuse_mode"].dump() + " is not supported (fuse_lora, set_adapters)");
  BuildOptions build;
  if (p.contains("loras")) {
    // As `tessera run --lora FILE:WEIGHT`: every LoRA into the UNet and the text encoder(s), in order.
    std::vector<LoraSpec> loras;
    for (const auto& l : p["loras"]) {
      LoraSpec spec;
      spec.file = (fs::path(c.models_dir) / l.at("file").get<std::string>()).string();
      spec.weight = l.at("weight").dump();
      loras.push_back(std::move(spec));
    }
    build.manager = std::make_shared<ComponentsManager>();
    build.manager->set_lora_override(std::move(loras));
  }
  // The same registry for every case: a Registry is not copyable, and cases only read it.
  auto pipe = Pipeline::from_recipe(std::move(recipe), const_cast<Registry&>(full_registry()), build);
  pipe->validate();

  ValueMap in;
  if (!single_file.empty()) {
    in["model"] = Value((fs::path(c.models_dir) / single_file).string());
    if (!config_folder.empty()) in["config"] = Value((fs::path(c.models_dir) / config_folder).string());
  } else {
    in["model"] = Value((fs::path(c.models_dir) / model).string());
  }
  auto set_if = [&](const char* key, const std::string& name) {
    if (!p.contains(key) || p[key].is_null()) return;
    const auto& v = p[key];
    if (v.is_string()) {
      in[name] = Value(v.get<std::string>());
    } else if (v.is_boolean()) {
      in[name] = Value(v.get<bool>());
    } else if (v.is_number_integer()) {
      in[name] = Value(v.get<int64_t>());
    } else if (v.is_number()) {
      in[name] = Value(v.get<double>());
    } else if (v.is_array() && !v.empty() && v[0].is_string()) {
      std::vector<std::string> list;
      for (const auto& e : v) list.push_back(e.get<std::string>());
      in[name] = Value(list);  // a batch of prompts
    } else if (v.is_array()) {
      in[name] = Value(int_list(v));
    } else {
      throw ValidationError("parameter '" + std::string(key) + "' has a form the runner cannot pass: " + v.dump());
    }
  };
  if (p.contains("controlnet")) in["controlnet"] = Value((fs::path(c.models_dir) / p["controlnet"].get<std::string>()).string());
  for (const char* k : {"controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end", "guess_mode"})
    set_if(k, k);
  if (c.inputs.contains("control_image")) {
    in["control_image"] = Value(ImageBatch{required_parity_tensor(c, "control_image")});
    // diffusers resizes a tensor control image with F.interpolate's nearest (PIL images with Lanczos).
    in["control_image_resample"] = Value(std::string("torch_nearest"));
  }
  if (p.contains("ip_adapter")) {
    in["ip_adapter"] = Value((fs::path(c.models_dir) / p["ip_adapter"].get<std::string>()).string());
    if (p.contains("image_encoder"))
      in["ip_adapter_image_encoder"] = Value((fs::path(c.models_dir) / p["image_encoder"].get<std::string>()).string());
    set_if("ip_adapter_scale", "ip_adapter_scale");
  }
  if (c.inputs.contains("ip_adapter_image_uint8")) {  // [H, W, 3] uint8 → an image input [1, 3, H, W] in [0, 1]
    const at::Tensor u8 = required_parity_tensor(c, "ip_adapter_image_uint8");
    in["ip_adapter_image"] = Value(ImageBatch{u8.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255.0)});
  }
  for (const char* k : {"prompt", "negative_prompt", "prompt_2", "negative_prompt_2", "num_inference_steps",
                        "guidance_scale", "height", "width", "strength", "clip_skip", "num_images_per_prompt",
                        "guidance_rescale", "original_size", "crops_coords_top_left", "target_size",
                        "negative_original_size", "negative_crops_coords_top_left", "negative_target_size"})
    set_if(k, k);
  if (p.contains("eta") && p["eta"].is_number()) in["eta"] = Value(p["eta"].get<double>());
  if (p.contains("generator_seed")) in["seed"] = Value(p["generator_seed"].get<int64_t>());
  in["output_type"] = Value(p.contains("output_type") && p["output_type"].is_string()
                                ? p["output_type"].get<std::string>()
                                : std::string("np"));
  if (c.inputs.contains("latents")) in["latents"] = Value(required_parity_tensor(c, "latents"));
  if (c.inputs.contains("init_image")) in["image"] = Value(ImageBatch{required_parity_tensor(c, "init_image")});
  if (c.inputs.contains("mask_image")) in["mask_image"] = Value(ImageBatch{required_parity_tensor(c, "mask_image")});

  std::vector<at::Tensor> steps;
  RunOptions opts;
  opts.step_callbacks.push_back([&](const StepInfo& info) {
    if (info.loop_path == "denoise") steps.push_back(info.state->get("latents").tensor("latents").clone());
    return true;
  });
  PipelineState out = pipe->run(in, opts);

  ParityComparison cmp(c.tolerance);
  auto state_tensor = [&](const std::string& name) -> at::Tensor {
    const Value& v = out.get(name);
    if (v.kind() == Kind::Image) return v.images(name).pixels;
    return v.is_none() ? at::Tensor() : v.tensor(name);
  };
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const std::string& name = it.key();
    at::Tensor got;
    if (name == "images") {
      got = state_tensor("images");
      const std::string type = p.value("output_type", std::string("np"));
      if (got.defined() && type != "pt") got = got.permute({0, 2, 3, 1});  // [B, 3, H, W] → NHWC (np/pil)
    } else if (name == "out_latents") {
      got = state_tensor("latents");
    } else if (name == "step_latents") {
      if (!steps.empty()) got = at::stack(steps);  // [T, B, C, h, w]
    } else if (name == "controlnet_cond") {
      // What the ControlNet received: diffusers' classic pipelines double the image for CFG themselves; here the
      // guider's passes batch it, so each pass's rows are the prepared image.
      got = state_tensor(name);
      const at::Tensor exp = required_parity_tensor(c, name);
      if (got.defined() && got.dim() == exp.dim() && got.size(0) > 0 && exp.size(0) == 2 * got.size(0))
        got = at::cat({got, got});
    } else if (name == "pixel_values" || name == "image_embeds" || name == "negative_image_embeds") {
      // The IP-Adapter's preprocessed image and image encoder features (sd.prepare_ip_adapter's outputs).
      static const std::map<std::string, std::string> kState = {{"pixel_values", "ip_adapter_pixel_values"},
                                                                {"image_embeds", "ip_adapter_embeds"},
                                                                {"negative_image_embeds", "negative_ip_adapter_embeds"}};
      got = state_tensor(kState.at(name));
    } else if (name == "unet_image_embeds" || name == "ip_tokens") {
      // What diffusers' UNet received for CFG: cat([negative, positive]); here the guider batches the two.
      const std::string pos = name == "ip_tokens" ? "ip_adapter_tokens" : "ip_adapter_embeds";
      const at::Tensor a = state_tensor("negative_" + pos), b = state_tensor(pos);
      if (a.defined() && b.defined()) got = at::cat({a, b});
    } else if (name == "random_draws") {
      continue;  // diagnostic only (where a port's draws diverge); the images and step latents cover the draws
    } else {
      got = state_tensor(name);
      // diffusers' classic pipelines hand the UNet cat([negative, positive]) (add_time_ids of the SDXL ControlNet
      // pipeline); Tessera keeps the two and the guider batches them.
      const at::Tensor exp = required_parity_tensor(c, name);
      if (got.defined() && got.dim() == exp.dim() && got.size(0) > 0 && exp.size(0) == 2 * got.size(0) &&
          out.has("negative_" + name)) {
        const at::Tensor neg = state_tensor("negative_" + name);
        if (neg.defined() && neg.sizes() == got.sizes()) got = at::cat({neg, got});
      }
    }
    if (!got.defined()) {
      cmp.fail("the pipeline produced no '" + name + "'");
      continue;
    }
    cmp.compare(name, got, required_parity_tensor(c, name));
  }
  return cmp.result();
}
}  // namespace

void register_pipeline_case_runner() { register_case_runner("pipeline", run_pipeline_case); }

}  // namespace tessera
