#include "tessera/spec.h"

#include <spdlog/spdlog.h>

#include <map>
#include <mutex>

#include "tessera/error.h"
#include "tessera/runtime.h"

namespace tessera {

InputParam::InputParam(std::string name_, Kind kind_, std::string description_, bool required_,
                       std::optional<Value> default_, std::string kwargs_type_)
    : name(std::move(name_)),
      kind(kind_),
      default_value(std::move(default_)),
      required(required_),
      description(std::move(description_)),
      kwargs_type(std::move(kwargs_type_)) {}

OutputParam::OutputParam(std::string name_, Kind kind_, std::string description_, std::string kwargs_type_)
    : name(std::move(name_)), kind(kind_), description(std::move(description_)), kwargs_type(std::move(kwargs_type_)) {}

namespace {
// The standard names, with diffusers' meanings and defaults (modular_pipelines InputParam.template).
const std::map<std::string, InputParam>& input_templates() {
  static const std::map<std::string, InputParam> t = [] {
    std::map<std::string, InputParam> m;
    auto add = [&](InputParam p) { m.emplace(p.name, std::move(p)); };
    add({"prompt", Kind::StringList, "The prompt or prompts to guide image generation."});
    add({"negative_prompt", Kind::StringList, "The prompt or prompts not to guide the image generation."});
    add({"prompt_embeds", Kind::Tensor, "Text embeddings [B, seq, dim]; given, the text encoder is skipped."});
    add({"negative_prompt_embeds", Kind::Tensor, "Negative text embeddings [B, seq, dim]."});
    add({"pooled_prompt_embeds", Kind::Tensor, "Pooled text embeddings [B, dim] (SDXL)."});
    add({"negative_pooled_prompt_embeds", Kind::Tensor, "Negative pooled text embeddings [B, dim] (SDXL)."});
    add({"height", Kind::Int, "Height in pixels of the generated image."});
    add({"width", Kind::Int, "Width in pixels of the generated image."});
    add({"num_inference_steps", Kind::Int, "Number of denoising steps.", false, Value(int64_t{50})});
    add({"timesteps", Kind::Tensor, "Custom timesteps for the denoising process."});
    add({"sigmas", Kind::Tensor, "Custom sigmas for the denoising process."});
    add({"num_images_per_prompt", Kind::Int, "Number of images to generate per prompt.", false, Value(int64_t{1})});
    add({"seed", Kind::Int, "Seed of the CPU random generator (same seed, same image as diffusers)."});
    add({"generator", Kind::Generator, "Random generator for reproducibility."});
    add({"latents", Kind::Tensor, "Pre-generated noisy latents [B, C, h, w]."});
    add({"image", Kind::Image, "Input image(s) [B, 3, H, W] in [0, 1] for image-to-image or inpainting."});
    add({"mask_image", Kind::Image, "Mask image(s); white pixels are repainted."});
    add({"strength", Kind::Float, "How much to transform the input image, in (0, 1].", false, Value(0.3)});
    add({"guidance_scale", Kind::Float, "Classifier-free guidance scale.", false, Value(7.5)});
    add({"output_type", Kind::String, "Output format: png | tensor | latent.", false, Value(std::string("png"))});
    add({"clip_skip", Kind::Int, "Number of final CLIP layers to skip."});
    add({"eta", Kind::Float, "DDIM eta.", false, Value(0.0)});
    return m;
  }();
  return t;
}

const std::map<std::string, OutputParam>& output_templates() {
  static const std::map<std::string, OutputParam> t = [] {
    std::map<std::string, OutputParam> m;
    auto add = [&](OutputParam p) { m.emplace(p.name, std::move(p)); };
    add({"images", Kind::Image, "Generated images [B, 3, H, W] in [0, 1]."});
    add({"latents", Kind::Tensor, "Denoised latents [B, C, h, w]."});
    add({"prompt_embeds", Kind::Tensor, "Text embeddings [B, seq, dim].", "denoiser_input_fields"});
    add({"negative_prompt_embeds", Kind::Tensor, "Negative text embeddings [B, seq, dim].", "denoiser_input_fields"});
    add({"timesteps", Kind::Tensor, "Timesteps of the denoising loop."});
    add({"num_inference_steps", Kind::Int, "Number of denoising steps actually run."});
    add({"batch_size", Kind::Int, "Number of prompts."});
    return m;
  }();
  return t;
}

template <typename M>
std::vector<std::string> keys(const M& m) {
  std::vector<std::string> out;
  for (const auto& kv : m) out.push_back(kv.first);
  return out;
}
}  // namespace

InputParam InputParam::from_template(const std::string& name) {
  auto it = input_templates().find(name);
  if (it == input_templates().end())
    throw SpecError("no standard input named '" + name + "'", {}, {}, did_you_mean(name, input_template_names()));
  return it->second;
}

OutputParam OutputParam::from_template(const std::string& name) {
  auto it = output_templates().find(name);
  if (it == output_templates().end())
    throw SpecError("no standard output named '" + name + "'", {}, {}, did_you_mean(name, output_template_names()));
  return it->second;
}

std::vector<std::string> input_template_names() { return keys(input_templates()); }
std::vector<std::string> output_template_names() { return keys(output_templates()); }

const char* creation_name(Creation c) { return c == Creation::FromPretrained ? "from_pretrained" : "from_config"; }

std::string ComponentSpec::load_id() const {
  const std::string d = canonical_dtype(dtype);
  std::string id = from + "|" + subfolder + "|" + variant + "|" + (d.empty() ? dtype : d);
  if (!model_type.empty() || !config_from.empty()) id += "|single_file:" + model_type + "|" + config_from;
  for (const auto& l : loras) id += "|lora:" + l.file + ":" + l.weight;
  return id;
}

std::string canonical_dtype(const std::string& name, std::string* problem) {
  if (name.empty() || name == "fp32" || name == "float32") return "fp32";
  if (name == "auto") {  // what this CPU runs fastest (include/tessera/runtime.h, auto_dtype)
    static std::once_flag logged;
    std::call_once(logged, [] { spdlog::debug("{}", auto_dtype().reason); });
    return auto_dtype().dtype;
  }
  if (name == "bf16" || name == "bfloat16") return "bf16";
  if (problem) {
    if (name == "fp16" || name == "float16" || name == "half")
      *problem = "dtype '" + name +
                 "' is not supported on the CPU: LibTorch 1.13 has no half-precision CPU convolutions; use bf16 "
                 "(same speed-up on CPUs with AVX512-BF16/AMX, float32's exponent range) or fp32";
    else
      *problem = "unknown dtype '" + name + "' (one of fp32, float32, bf16, bfloat16, auto)";
  }
  return "";
}

const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::Leaf: return "leaf";
    case BlockKind::Sequential: return "sequential";
    case BlockKind::Loop: return "loop";
    case BlockKind::Auto: return "auto";
    case BlockKind::Conditional: return "conditional";
  }
  return "?";
}

const InputParam* BlockSpec::find_input(const std::string& name) const {
  for (const auto& p : inputs)
    if (p.name == name) return &p;
  return nullptr;
}

const OutputParam* BlockSpec::find_output(const std::string& name) const {
  for (const auto& p : outputs)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace tessera
