#pragma once
/// image2image / inpainting: the tail of the schedule that `strength` keeps (diffusers' get_timesteps).
#include <ATen/ATen.h>

#include "schedulers/scheduler.h"

namespace tessera {

/// What `strength_timesteps` returns: the timesteps to run and how many denoising steps that is.
struct StrengthTimesteps {
  at::Tensor timesteps;
  int64_t num_inference_steps = 0;
  int64_t begin_index = 0;  ///< index of the first kept timestep (counts model calls: × order), set on the scheduler
};

/// After `scheduler.set_timesteps(num_inference_steps)`: keeps the last
/// min(int(num_inference_steps * strength), num_inference_steps) steps, as diffusers'
/// img2img pipelines do, and sets the scheduler's begin index to match.
/// Throws InputError when strength is outside (0, 1] (0 would denoise nothing).
StrengthTimesteps strength_timesteps(Scheduler& scheduler, int64_t num_inference_steps, double strength);

/// The flow-matching pipelines' rule (FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline get_timesteps):
/// init = min(n * strength, n) as a float, t_start = int(max(n - init, 0)) — e.g. 5 steps at 0.7 keep 4, where
/// strength_timesteps keeps 3. Same checks, same begin index on the scheduler.
StrengthTimesteps flow_strength_timesteps(Scheduler& scheduler, int64_t num_inference_steps, double strength);

}  // namespace tessera
