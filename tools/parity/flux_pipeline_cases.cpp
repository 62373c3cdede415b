// The flux_* pipeline cases of manifest_dit.json (see tests/fixtures/parity/README_dit.md).
#include "tools/parity/flux_pipeline_cases.h"

#include <filesystem>
#include <set>

#include "tessera/block.h"
#include "tessera/pipeline.h"
#include "tessera/recipe.h"
#include "schedulers/scheduler.h"
#include "tools/parity/pipeline_cases.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

/// Records, during a run, what the comparisons need beyond the final state: the latents after the latent
/// preparation (the first transformer input) and the timestep / guidance tensors each denoiser step passed.
class FluxRecorder final : public ExecObserver {
 public:
  void on_block_end(const std::string& path, const Block&, PipelineState& state) override {
    if (path == "prepare_latents") initial_latents = state.get("latents").tensor("latents").clone();
    if (path == "denoise.denoiser") {
      timesteps.push_back(state.get("timestep").tensor("timestep").clone());
      if (state.has("guidance")) guidance.push_back(state.get("guidance").tensor("guidance").clone());
    }
  }
  at::Tensor initial_latents;
  std::vector<at::Tensor> timesteps, guidance;
};

/// [B, (h/2)(w/2), 4C] → [B, C, h, w] for the latent size of `like` [B, C, h, w].
at::Tensor unpack_like(const at::Tensor& packed, const at::Tensor& like) {
  const int64_t b = packed.size(0), h = like.size(2), w = like.size(3), c = like.size(1);
  return packed.view({b, h / 2, w / 2, c, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({b, c, h, w});
}

ParityResult run_flux_pipeline_case(const ParityCase& c) {
  const nlohmann::json& p = c.params;
  // A parameter the runner does not map would be silently ignored: refuse it. The informational ones describe
  // the case (derived sizes, the random-draw order, comparisons diffusers made) and are checked where they can be.
  static const std::set<std::string> kMapped = {
      "model", "prompt", "prompt_2", "negative_prompt", "negative_prompt_2", "height", "width", "num_inference_steps",
      "guidance_scale", "true_cfg_scale", "max_sequence_length", "output_type", "generator_seed", "strength",
      "scheduler_class", "scheduler_config"};
  static const std::set<std::string> kInformational = {
      "guidance_embeds", "latents_seed", "latent_height", "latent_width", "image_seq_len", "mu", "scaling_factor",
      "shift_factor", "num_random_draws", "random_draw_order", "t_start", "steps_run", "same_inputs_as",
      "max_abs_diff_vs_standard_pipeline", "max_abs_diff_step_latents_vs_standard", "equals_standard_pipeline",
      "blocks"};
  for (auto it = p.begin(); it != p.end(); ++it)
    if (!kMapped.count(it.key()) && !kInformational.count(it.key()) && !it.value().is_null())
      throw ValidationError("FLUX pipeline case parameter '" + it.key() + "' is not supported by the runner");

  Recipe recipe = load_recipe((fs::path(find_recipes_dir(c.models_dir)) / "flux" / "auto.yaml").string());
  if (p.contains("scheduler_class")) {
    for (auto& input : recipe.inputs)
      if (input.name == "scheduler") input.default_value = Value(p["scheduler_class"].get<std::string>());
    RecipeComponent& sc = recipe.components.at("scheduler");
    sc.spec.from.clear();
    sc.spec.subfolder.clear();
    sc.spec.creation = Creation::FromConfig;
    if (p.contains("scheduler_config")) sc.spec.config = json_to_value(p["scheduler_config"]);
  }
  auto pipe = Pipeline::from_recipe(std::move(recipe), const_cast<Registry&>(full_registry()));
  pipe->validate();

  ValueMap in;
  const std::string model = p.value("model", std::string("tiny-flux"));
  in["model"] = Value((fs::path(c.models_dir) / model).string());
  for (const char* k : {"prompt", "prompt_2", "negative_prompt", "negative_prompt_2"})
    if (p.contains(k) && p[k].is_string()) in[k] = Value(p[k].get<std::string>());
  for (const char* k : {"height", "width", "num_inference_steps", "max_sequence_length"})
    if (p.contains(k) && p[k].is_number_integer()) in[k] = Value(p[k].get<int64_t>());
  for (const char* k : {"guidance_scale", "true_cfg_scale", "strength"})
    if (p.contains(k) && p[k].is_number()) in[k] = Value(p[k].get<double>());
  if (p.contains("generator_seed")) in["seed"] = Value(p["generator_seed"].get<int64_t>());
  in["output_type"] = Value(p.value("output_type", std::string("np")));
  if (c.inputs.contains("latents")) in["latents"] = Value(required_parity_tensor(c, "latents"));
  if (c.inputs.contains("init_image")) in["image"] = Value(ImageBatch{required_parity_tensor(c, "init_image")});
  // inputs.latents_unpacked, vae_sample_noise and noise record diffusers' draws: Tessera makes its own from the
  // seed and is compared on what they produce (image_latents, initial_latents, step_latents).

  FluxRecorder recorder;
  std::vector<at::Tensor> steps;
  RunOptions opts;
  opts.observers.push_back(&recorder);
  opts.step_callbacks.push_back([&](const StepInfo& info) {
    if (info.loop_path == "denoise") steps.push_back(info.state->get("latents").tensor("latents").clone());
    return true;
  });
  PipelineState out = pipe->run(in, opts);
  auto scheduler = pipe->components().get_as<Scheduler>("scheduler");

  ParityComparison cmp(c.tolerance);
  if (p.contains("steps_run") && static_cast<int64_t>(steps.size()) != p["steps_run"].get<int64_t>())
    cmp.fail("ran " + std::to_string(steps.size()) + " steps, the case ran " + p["steps_run"].dump());
  auto state_tensor = [&](const std::string& name) -> at::Tensor {
    const Value& v = out.get(name);
    if (v.kind() == Kind::Image) return v.images(name).pixels;
    return v.is_none() ? at::Tensor() : v.tensor(name);
  };
  for (auto it = c.expected.begin(); it != c.expected.end(); ++it) {
    const std::string& name = it.key();
    const at::Tensor expected = required_parity_tensor(c, name);
    at::Tensor got;
    if (name == "images") {
      got = state_tensor("images");
      if (got.defined()) got = got.permute({0, 2, 3, 1});  // [B, 3, H, W] → NHWC
    } else if (name == "step_latents") {
      if (!steps.empty()) got = at::stack(steps);  // [T, B, S, 4C]
    } else if (name == "random_draws") {
      continue;  // diagnostic only (where a port's draws diverge); the draws' results are compared
    } else if (name == "timesteps") {
      got = scheduler->timesteps();  // the full schedule (image2image runs its tail from the begin index)
    } else if (name == "sigmas") {
      got = scheduler->sigmas();
    } else if (name == "transformer_timesteps" || name == "transformer_guidance") {
      const auto& rec = name == "transformer_timesteps" ? recorder.timesteps : recorder.guidance;
      if (!rec.empty()) got = at::stack(rec);  // [T, rows of the (batched) call]
      // diffusers' true CFG makes two batch-1 calls per step ([2T, 1]); Tessera batches them ([T, 2]).
      if (got.defined() && got.numel() == expected.numel()) got = got.reshape(expected.sizes());
    } else if (name == "final_latents_unpacked") {
      got = unpack_like(state_tensor("latents"), expected);
    } else if (name == "latents_drawn_unpacked") {
      if (recorder.initial_latents.defined()) got = unpack_like(recorder.initial_latents, expected);
    } else if (name == "initial_latents") {
      got = recorder.initial_latents;
    } else {
      got = state_tensor(name);
    }
    if (!got.defined()) {
      cmp.fail("the pipeline produced no '" + name + "'");
      continue;
    }
    cmp.compare(name, got, expected);
  }
  return cmp.result();
}

}  // namespace

void register_flux_pipeline_case_runner() {
  register_pipeline_family_runner("tiny-flux", run_flux_pipeline_case);
}

}  // namespace tessera
