#include "schedulers/register.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "schedulers/ddim.h"
#include "schedulers/ddpm.h"
#include "schedulers/dpmsolver_multistep.h"
#include "schedulers/euler_ancestral_discrete.h"
#include "schedulers/euler_discrete.h"
#include "schedulers/flow_match_euler_discrete.h"
#include "schedulers/heun_discrete.h"
#include "schedulers/k_dpm_2_discrete.h"
#include "schedulers/lcm.h"
#include "schedulers/lms_discrete.h"
#include "schedulers/pndm.h"
#include "schedulers/unipc_multistep.h"

namespace tessera {

namespace {

struct SchedulerType {
  std::string description;
  std::function<SchedulerPtr(SchedulerConfig)> create;
};

template <typename T>
SchedulerType entry(std::string description) {
  return {std::move(description), [](SchedulerConfig c) -> SchedulerPtr { return std::make_shared<T>(std::move(c)); }};
}

const std::map<std::string, SchedulerType>& scheduler_types() {
  static const std::map<std::string, SchedulerType> types = {
      {"DDIMScheduler", entry<DDIMScheduler>("DDIM: deterministic (eta 0) or stochastic denoising diffusion implicit model")},
      {"DDPMScheduler", entry<DDPMScheduler>("DDPM: ancestral sampling with the posterior variance")},
      {"DPMSolverMultistepScheduler",
       entry<DPMSolverMultistepScheduler>("DPM-Solver(++) multistep, orders 1-3, optional SDE and Karras sigmas")},
      {"EulerAncestralDiscreteScheduler",
       entry<EulerAncestralDiscreteScheduler>("Euler steps with ancestral noise (k-diffusion euler_a)")},
      {"EulerDiscreteScheduler", entry<EulerDiscreteScheduler>("Euler method on the sigma ODE (k-diffusion)")},
      {"FlowMatchEulerDiscreteScheduler",
       entry<FlowMatchEulerDiscreteScheduler>("Euler steps on a rectified flow (SD3, Flux), static or dynamic shift")},
      {"UniPCMultistepScheduler", entry<UniPCMultistepScheduler>("UniPC: unified predictor-corrector multistep")},
      {"HeunDiscreteScheduler", entry<HeunDiscreteScheduler>("Heun's second-order method (two model calls per step)")},
      {"KDPM2DiscreteScheduler", entry<KDPM2DiscreteScheduler>("k-diffusion DPM-Solver-2 (two model calls per step)")},
      {"LCMScheduler", entry<LCMScheduler>("Latent consistency model multistep sampling")},
      {"LMSDiscreteScheduler", entry<LMSDiscreteScheduler>("Linear multistep (order 4) in sigma")},
      {"PNDMScheduler", entry<PNDMScheduler>("PNDM: Runge-Kutta warm-up then linear multistep (PLMS)")},
  };
  return types;
}

// A ComponentSpec's config (a Value map) as JSON fields.
nlohmann::json value_to_json(const Value& v, const std::string& what) {
  switch (v.kind()) {
    case Kind::None: return nullptr;
    case Kind::Int: return v.to_int();
    case Kind::Float: return v.to_float();
    case Kind::Bool: return v.to_bool();
    case Kind::String: return v.str();
    case Kind::IntList: return v.int_list();
    case Kind::FloatList: return v.float_list();
    case Kind::StringList: return v.string_list();
    case Kind::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : v.map()) out[kv.first] = value_to_json(kv.second, what + "." + kv.first);
      return out;
    }
    default:
      throw ValidationError("scheduler config '" + what + "' has kind " + kind_name(v.kind()) +
                            ", which a scheduler config cannot hold");
  }
}

}  // namespace

std::vector<std::string> builtin_scheduler_names() {
  std::vector<std::string> out;
  for (const auto& kv : scheduler_types()) out.push_back(kv.first);
  return out;
}

SchedulerPtr make_scheduler(const std::string& type, const nlohmann::json& config, const std::string& source) {
  const auto& types = scheduler_types();
  auto it = types.find(type);
  if (it == types.end())
    throw ValidationError("unknown scheduler '" + type + "'", SourceLoc{source}, {},
                          did_you_mean(type, builtin_scheduler_names()));
  return it->second.create(SchedulerConfig(config, type, source));
}

SchedulerPtr load_scheduler(const std::string& type, const std::string& path, const nlohmann::json& overrides) {
  std::ifstream in(path);
  if (!in) throw ModelLoadError("cannot read scheduler config '" + path + "'", SourceLoc{path});
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json config = parse_json_lenient(ss.str(), path);
  if (!config.is_object()) throw ModelLoadError("scheduler config must be a JSON object", SourceLoc{path});
  for (auto it = overrides.begin(); it != overrides.end(); ++it) config[it.key()] = it.value();
  return make_scheduler(type, config, path);
}

void register_builtin_schedulers(Registry& registry) {
  for (const auto& kv : scheduler_types()) {
    const std::string type = kv.first;
    registry.add_component_type(
        {type, ComponentCategory::Scheduler, kv.second.description,
         [type](const ComponentSpec& spec) -> ComponentPtr {
           nlohmann::json overrides =
               spec.config.is_none() ? nlohmann::json::object() : value_to_json(spec.config, spec.name);
           if (!overrides.is_object())
             throw ValidationError("component '" + spec.name + "': scheduler config must be a map of fields");
           if (spec.from.empty()) return make_scheduler(type, overrides, "component '" + spec.name + "' config");
           std::filesystem::path p(spec.from);
           if (!spec.subfolder.empty()) p /= spec.subfolder;
           return load_scheduler(type, (p / "scheduler_config.json").string(), overrides);
         },
         {}});
  }
}

}  // namespace tessera
