#pragma once
/// UniPCMultistepScheduler: unified predictor-corrector (https://arxiv.org/abs/2302.04867), bh1 / bh2.
#include "schedulers/schedule_utils.h"

namespace tessera {

/// diffusers.UniPCMultistepScheduler: UniP predictor + UniC corrector of order solver_order, data (predict_x0)
/// or noise prediction, Karras sigmas, disable_corrector steps. solver_p and flow sigmas are not supported.
class UniPCMultistepScheduler : public Scheduler {
 public:
  explicit UniPCMultistepScheduler(SchedulerConfig cfg);
  std::string type() const override { return "UniPCMultistepScheduler"; }
  void set_timesteps(int64_t num_inference_steps, const SetTimestepsOptions& options = {}) override;
  SchedulerOutput step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                       std::optional<at::Generator> generator = std::nullopt,
                       std::optional<at::Tensor> noise = std::nullopt) override;
  at::Tensor add_noise(const at::Tensor& original_samples, const at::Tensor& noise,
                       const at::Tensor& timesteps) override;

 private:
  at::Tensor convert_model_output(const at::Tensor& model_output, const at::Tensor& sample) const;
  /// UniP (predictor: is_corrector false) or UniC (corrector) update of `order`.
  at::Tensor bh_update(const at::Tensor& x, int64_t order, bool is_corrector, const at::Tensor& model_t) const;
  int64_t find_index(double timestep) const;
  BetaSchedule schedule_;
  int64_t solver_order_ = 2, steps_offset_ = 0;
  std::string prediction_type_, solver_type_, timestep_spacing_, final_sigmas_type_;
  bool predict_x0_ = true, thresholding_ = false, lower_order_final_ = true, use_karras_sigmas_ = false;
  double dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0;
  std::vector<int64_t> disable_corrector_;
  // Multistep state, reset by set_timesteps.
  std::vector<at::Tensor> model_outputs_;
  at::Tensor last_sample_;
  int64_t lower_order_nums_ = 0, this_order_ = 1;
};

}  // namespace tessera
