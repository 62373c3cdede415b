#pragma once
/// Schedulers: the noise schedules and solvers of diffusers, one algorithm per file, configured from
/// scheduler_config.json with diffusers' field names and defaults. A scheduler is a Component.
///
///   auto s = make_scheduler("EulerDiscreteScheduler", config_json);
///   s->set_timesteps(30);
///   for (int64_t i = 0; i < s->timesteps().size(0); ++i) { double t = s->timestep_at(i); … x = s->step(eps, t, x).prev_sample; }
#include <ATen/ATen.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/components.h"
#include "tessera/error.h"

namespace tessera {

/// What one `step` returns. `pred_original_sample` is undefined for schedulers that do not expose it
/// (diffusers returns no such field for DPM-Solver, UniPC, PNDM, flow matching).
struct SchedulerOutput {
  at::Tensor prev_sample;
  at::Tensor pred_original_sample;
};

/// Extra arguments of `set_timesteps` that only some schedulers take (diffusers' keyword arguments).
struct SetTimestepsOptions {
  std::optional<double> mu;  ///< FlowMatchEulerDiscreteScheduler with use_dynamic_shifting
  /// Custom noise levels, one per step (diffusers' `sigmas=`; FLUX passes linspace(1, 1/n, n)); the schedule's
  /// shifting is applied to them. Only schedulers that take custom sigmas accept it (ValidationError otherwise).
  std::optional<std::vector<double>> sigmas;
};

/// Reads one scheduler's config (a JSON object, usually scheduler_config.json) field by field with diffusers'
/// defaults. A field of the wrong type is a ValidationError naming the field and the file; fields the class does
/// not know are logged (spdlog warning, with a did-you-mean) by `finish`, as diffusers ignores them too.
class SchedulerConfig {
 public:
  SchedulerConfig(nlohmann::json config, std::string class_name, std::string source = {});

  int64_t get_int(const std::string& name, int64_t def);
  double get_float(const std::string& name, double def);
  /// null (or absent with def nullopt) gives nullopt.
  std::optional<double> get_optional_float(const std::string& name, std::optional<double> def = std::nullopt);
  bool get_bool(const std::string& name, bool def);
  std::string get_string(const std::string& name, const std::string& def);
  /// A string that must be one of `allowed` (ValidationError listing them otherwise).
  std::string get_choice(const std::string& name, const std::string& def, const std::vector<std::string>& allowed);
  std::optional<std::vector<double>> get_optional_float_list(const std::string& name);
  /// Marks a field as known without reading it (accepted for compatibility, no effect here).
  void accept(const std::string& name);
  /// Warns about every field that was never read. Call once, after all reads.
  void finish();

  const std::string& class_name() const { return class_name_; }
  const nlohmann::json& json() const { return json_; }
  /// ValidationError naming the field and the file.
  [[noreturn]] void fail(const std::string& field, const std::string& message) const;

 private:
  const nlohmann::json* find(const std::string& name);
  nlohmann::json json_;
  std::string class_name_, source_;
  std::set<std::string> read_;
};

/// Parses JSON that may contain Python's non-standard NaN / Infinity / -Infinity literals (Python's json.dump
/// writes them, e.g. DPMSolver's lambda_min_clipped): they become the strings "NaN", "Infinity", "-Infinity",
/// which the config reader accepts as floats. Throws ValidationError naming `source` on malformed JSON.
nlohmann::json parse_json_lenient(const std::string& text, const std::string& source = {});

/// Base of every scheduler. Stateful schedulers (step index, multistep history) reset on `set_timesteps`.
class Scheduler : public Component {
 public:
  /// Computes the inference timesteps. Throws ValidationError when num_inference_steps <= 0 or
  /// > num_train_timesteps (and for options the scheduler cannot use).
  virtual void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) = 0;
  /// Timesteps of the current schedule, with diffusers' dtype (int64 or float32).
  const at::Tensor& timesteps() const { return timesteps_; }
  /// timesteps()[i] as a double (exact for both dtypes).
  double timestep_at(int64_t i) const;
  /// The noise levels of sigma-based schedulers (float32, one more than steps); undefined when there are none.
  const at::Tensor& sigmas() const { return sigmas_; }
  /// Standard deviation of the initial noise (multiply the unit-normal latents by it).
  virtual double init_noise_sigma() const { return 1.0; }
  /// Model evaluations per step as diffusers counts them (2 for Heun and KDPM2).
  virtual int order() const { return 1; }
  int64_t num_train_timesteps() const { return num_train_timesteps_; }
  int64_t num_inference_steps() const { return num_inference_steps_; }

  /// Scales the denoising model input at `timestep` (identity for most schedulers).
  virtual at::Tensor scale_model_input(const at::Tensor& sample, double timestep) { return sample; }
  /// One solver step from `sample` at `timestep` given the model output. Stochastic schedulers draw their noise
  /// from `generator` (diffusers' order, shape and dtype) unless `noise` is given, which is then used instead.
  virtual SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                               std::optional<at::Generator> generator = std::nullopt,
                               std::optional<at::Tensor> noise = std::nullopt) = 0;
  /// Noises clean samples to the level of `timesteps` (one per batch item, or one for all).
  virtual at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                               const at::Tensor& timesteps) = 0;
  /// Flow matching's forward process; ValidationError for schedulers without it.
  virtual at::Tensor scale_noise(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& noise);
  /// Sets a keyword argument of `step` that diffusers passes per call (DDIM's `eta`); ValidationError for names
  /// the scheduler does not take.
  virtual void set_step_option(const std::string& name, double value);
  /// Starting index for img2img (the first `begin_index` timesteps are skipped).
  virtual void set_begin_index(int64_t begin_index) { begin_index_ = begin_index; }

 protected:
  /// Throws ValidationError for num_inference_steps <= 0 or > num_train_timesteps.
  void check_num_inference_steps(int64_t n) const;
  /// Index of `timestep` in timesteps(): the second match when it occurs twice (diffusers' rule, so img2img
  /// starting in the middle of a Heun schedule does not skip a step). ValidationError when absent.
  int64_t index_for_timestep(double timestep) const;
  /// step_index_ initialised from `timestep` (or begin_index_) on the first call after set_timesteps.
  void init_step_index(double timestep);
  void require_timesteps_set(const char* what) const;

  at::Tensor timesteps_;
  at::Tensor sigmas_;
  int64_t num_train_timesteps_ = 1000;
  int64_t num_inference_steps_ = 0;
  std::optional<int64_t> step_index_;
  std::optional<int64_t> begin_index_;
};
using SchedulerPtr = std::shared_ptr<Scheduler>;

}  // namespace tessera
