#include "schedulers/strength.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace tessera {

namespace {
void check_strength(double strength) {
  if (!(strength > 0.0 && strength <= 1.0)) {
    std::ostringstream os;
    os << "strength must be in (0, 1], got " << strength;
    throw InputError(os.str(), {}, {}, "1 ignores the input image entirely; small values keep more of it");
  }
}

StrengthTimesteps keep_from(Scheduler& scheduler, int64_t num_inference_steps, int64_t t_start) {
  int64_t begin = t_start * scheduler.order();
  StrengthTimesteps out;
  out.timesteps = scheduler.timesteps().slice(0, begin);
  out.num_inference_steps = num_inference_steps - t_start;
  out.begin_index = begin;
  scheduler.set_begin_index(begin);
  return out;
}
}  // namespace

StrengthTimesteps flow_strength_timesteps(Scheduler& scheduler, int64_t num_inference_steps, double strength) {
  check_strength(strength);
  const double n = static_cast<double>(num_inference_steps);
  const double init = std::min(n * strength, n);
  const auto t_start = static_cast<int64_t>(std::max(n - init, 0.0));
  if (t_start >= num_inference_steps)
    throw InputError("strength " + std::to_string(strength) + " with " + std::to_string(num_inference_steps) +
                         " steps leaves no denoising step",
                     {}, {}, "raise strength or num_inference_steps");
  return keep_from(scheduler, num_inference_steps, t_start);
}

StrengthTimesteps strength_timesteps(Scheduler& scheduler, int64_t num_inference_steps, double strength) {
  check_strength(strength);
  // diffusers: init_timestep = min(int(n * strength), n); t_start = max(n - init_timestep, 0)
  int64_t init = std::min(static_cast<int64_t>(static_cast<double>(num_inference_steps) * strength), num_inference_steps);
  int64_t t_start = std::max<int64_t>(num_inference_steps - init, 0);
  if (init == 0)
    throw InputError("strength " + std::to_string(strength) + " with " + std::to_string(num_inference_steps) +
                         " steps leaves no denoising step",
                     {}, {}, "raise strength or num_inference_steps");
  return keep_from(scheduler, num_inference_steps, t_start);
}

}  // namespace tessera
