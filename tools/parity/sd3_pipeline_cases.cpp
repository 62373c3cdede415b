// The sd3_* pipeline cases of manifest_dit.json (see tests/fixtures/parity/README_dit.md).
#include "tools/parity/sd3_pipeline_cases.h"

#include <filesystem>
#include <set>

#include "tessera/block.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/scheduler.h"
#include "tools/parity/pipeline_cases.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

/// Records, during a run, what the comparisons need beyond the final state: the latents after the latent
/// preparation (the first transformer input: drawn for text2image, noised for image2image) and the timestep
/// tensor each denoiser step passed to the transformer.
class SD3Recorder final : public ExecObserver {
 public:
  void on_block_end(const std::string& path, const Block&, PipelineState& state) override {
    if (path == "prepare_latents") initial_latents = state.get("latents").tensor("latents").clone();
    if (path == "denoise.denoiser") timesteps.push_back(state.get("timestep").tensor("timestep").clone());
  }
  at::Tensor initial_latents;
  std::vector<at::Tensor> timesteps;
};

void check_params(const nlohmann::json& p) {
  // A parameter the runner does not map would be silently ignored: refuse it. The informational ones describe
  // the case (the draws, comparisons diffusers made between its own pipelines) and are checked where they can be.
  static const std::set<std::string> kMapped = {
      "model", "prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3",
      "height", "width", "num_inference_steps", "guidance_scale", "max_sequence_length", "output_type",
      "generator_seed", "strength", "clip_skip", "num_images_per_prompt", "scheduler_class", "scheduler_config",
      "guider", "guider_config"};
  static const std::set<std::string> kInformational = {
      "latents_seed", "scaling_factor", "shift_factor", "num_random_draws", "random_draw_order", "t_start",
      "steps_run", "image_seq_len", "mu", "same_inputs_as", "max_abs_diff_vs_standard_pipeline",
      "max_abs_diff_step_latents_vs_standard", "equals_standard_pipeline", "max_abs_diff_no_negative_vs_standard",
      "transformer_call_batches_explicit_negative", "transformer_call_batches_no_negative"};
  for (auto it = p.begin(); it != p.end(); ++it)
    if (!kMapped.count(it.key()) && !kInformational.count(it.key()) && !it.value().is_null())
      throw ValidationError("SD3 pipeline case parameter '" + it.key() + "' is not supported by the runner");
  if (p.contains("scheduler_config") && !p.contains("scheduler_class"))
    throw ValidationError("scheduler_config without scheduler_class: the runner needs the class");
}

std::unique_ptr<Pipeline> make_pipeline(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  Recipe recipe = load_recipe((fs::path(find_recipes_dir(c.models_dir)) / "sd3" / "auto.yaml").string());
  if (p.contains("scheduler_class")) {
    // The class comes in as the recipe's `scheduler` input; the case's full config replaces the folder's.
    for (auto& input : recipe.inputs)
      if (input.name == "scheduler") input.default_value = Value(p["scheduler_class"].get<std::string>());
    RecipeComponent& sc = recipe.components.at("scheduler");
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
  // The same registry for every case: a Registry is not copyable, and cases only read it.
  auto pipe = Pipeline::from_recipe(std::move(recipe), const_cast<Registry&>(full_registry()));
  pipe->validate();
  return pipe;
}

ValueMap case_inputs(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  ValueMap in;
  in["model"] = Value((fs::path(c.models_dir) / p.value("model", std::string("tiny-sd3"))).string());
  for (const char* k : {"prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3"}) {
    if (!p.contains(k) || p[k].is_null()) continue;  // null: the pipeline's default ("" for the negatives)
    if (p[k].is_string()) {
      in[k] = Value(p[k].get<std::string>());
    } else {
      std::vector<std::string> list;
      for (const auto& e : p[k]) list.push_back(e.get<std::string>());
      in[k] = Value(list);
    }
  }
  for (const char* k : {"height", "width", "num_inference_steps", "max_sequence_length", "clip_skip",
                        "num_images_per_prompt"})
    if (p.contains(k) && p[k].is_number_integer()) in[k] = Value(p[k].get<int64_t>());
  for (const char* k : {"guidance_scale", "strength"})
    if (p.contains(k) && p[k].is_number()) in[k] = Value(p[k].get<double>());
  if (p.contains("generator_seed")) in["seed"] = Value(p["generator_seed"].get<int64_t>());
  in["output_type"] = Value(p.value("output_type", std::string("np")));
  if (c.inputs.contains("latents")) in["latents"] = Value(required_parity_tensor(c, "latents"));
  if (c.inputs.contains("init_image")) in["image"] = Value(ImageBatch{required_parity_tensor(c, "init_image")});
  // inputs.vae_sample_noise records diffusers' VAE draw: Tessera makes its own from the seed and is compared on
  // what it produces (image_latents); inputs.noise is compared with the noise Tessera drew after it.
  return in;
}

ParityResult run_sd3_pipeline_case(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  check_params(p);
  auto pipe = make_pipeline(c);
  const ValueMap in = case_inputs(c);

  SD3Recorder recorder;
  std::vector<at::Tensor> steps;
  RunOptions opts;
  opts.observers.push_back(&recorder);
  opts.step_callbacks.push_back([&](const StepInfo& info) {
    if (info.loop_path == "denoise") steps.push_back(info.state->get("latents").tensor("latents").clone());
    return true;
  });
  PipelineState out = pipe->run(in, opts);
  auto scheduler = pipe->components().get_as<Scheduler>("scheduler");
  auto vae = pipe->components().get_as<AutoencoderKLImpl>("vae");

  ParityComparison cmp(c.tolerance);
  std::vector<std::string> notes;
  // The informational parameters that describe this run: the VAE's latent scaling and the image2image tail.
  if (p.contains("scaling_factor")) cmp.compare_scalar("scaling_factor", vae->config.scaling_factor, p["scaling_factor"].get<double>());
  if (p.contains("shift_factor"))
    cmp.compare_scalar("shift_factor", vae->config.shift_factor.value_or(0.0), p["shift_factor"].get<double>());
  if (p.contains("steps_run") && static_cast<int64_t>(steps.size()) != p["steps_run"].get<int64_t>())
    cmp.fail("ran " + std::to_string(steps.size()) + " steps, the case ran " + p["steps_run"].dump());
  if (p.contains("t_start"))
    cmp.compare_scalar("t_start", static_cast<double>(p["num_inference_steps"].get<int64_t>() -
                                                      out.get("num_inference_steps").to_int("num_inference_steps")),
                       p["t_start"].get<double>());
  if (c.inputs.contains("noise") && !out.get("noise").is_none())
    cmp.compare("noise", out.get("noise").tensor("noise"), required_parity_tensor(c, "noise"));

  auto state_tensor = [&](const PipelineState& st, const std::string& name) -> at::Tensor {
    const Value& v = st.get(name);
    if (v.kind() == Kind::Image) return v.images(name).pixels;
    return v.is_none() ? at::Tensor() : v.tensor(name);
  };
  auto nhwc = [](at::Tensor x) { return x.defined() ? x.permute({0, 2, 3, 1}) : x; };  // [B, 3, H, W] → NHWC
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const std::string& name = it.key();
    const at::Tensor expected = required_parity_tensor(c, name);
    at::Tensor got;
    if (name == "images") {
      got = nhwc(state_tensor(out, "images"));
    } else if (name == "step_latents") {
      if (!steps.empty()) got = at::stack(steps);  // [T, B, C, h, w]
    } else if (name == "random_draws") {
      // The first 64 values of each draw; text2image draws once: the initial latents.
      if (c.inputs.contains("init_image") || p.value("num_random_draws", int64_t{0}) != 1) {
        notes.push_back("  random_draws not compared (diagnostic; the draws' results are compared)");
        continue;
      }
      if (recorder.initial_latents.defined()) got = recorder.initial_latents.flatten().slice(0, 0, 64).unsqueeze(0);
    } else if (name == "timesteps") {
      got = scheduler->timesteps();  // the full schedule (image2image runs its tail from the begin index)
    } else if (name == "sigmas") {
      got = scheduler->sigmas();
    } else if (name == "transformer_timesteps") {
      if (!recorder.timesteps.empty()) got = at::stack(recorder.timesteps);  // [T, rows of the (batched) call]
      // separate batch-1 calls per pass ([2T, 1] in diffusers' modular pipeline) hold the same values as [T, 2]
      if (got.defined() && got.numel() == expected.numel()) got = got.reshape(expected.sizes());
    } else if (name == "latents_drawn" || name == "initial_latents") {
      got = recorder.initial_latents;
    } else if (name == "images_without_negative_prompt") {
      // diffusers' modular SD3 without a negative prompt computes no negative embeddings, and its CFG guider then
      // returns the conditional prediction: the same as a run without guidance. Tessera follows the classic
      // pipeline (the negative defaults to ""), so the trap's result is compared with a run at guidance_scale 1.
      ValueMap unguided = in;
      unguided.erase("negative_prompt");
      unguided["guidance_scale"] = Value(1.0);
      got = nhwc(state_tensor(pipe->run(unguided), "images"));
      notes.push_back("  images_without_negative_prompt: compared with Tessera at guidance_scale 1 (diffusers' "
                      "modular SD3 drops CFG without a negative prompt; Tessera's negative defaults to \"\")");
    } else {
      got = state_tensor(out, name);
    }
    if (!got.defined()) {
      cmp.fail("the pipeline produced no '" + name + "'");
      continue;
    }
    cmp.compare(name, got, expected);
  }
  ParityResult r = cmp.result();
  r.details.insert(r.details.end(), notes.begin(), notes.end());
  return r;
}

}  // namespace

void register_sd3_pipeline_case_runner() {
  // "tiny-sd3" also matches tiny-sd35 (the longest registered prefix wins).
  register_pipeline_family_runner("tiny-sd3", run_sd3_pipeline_case);
}

}  // namespace tessera
