// IP-Adapter component cases (manifest_control.json).
#include "tools/parity/ip_adapter_cases.h"

#include <torch/torch.h>

#include "engine/error.h"
#include "models/adapters/ip_adapter.h"
#include "models/vision/clip_image_processor.h"
#include "models/vision/clip_vision_model.h"
#include "tools/parity/component_cases.h"
#include "tools/parity/parity.h"

namespace tessera {

namespace {

at::Tensor need(const ParityCase& c, const std::string& name) { return required_parity_tensor(c, name); }

/// CLIPImageProcessor(size=params.size.shortest_edge, crop_size=params.crop_size) with the case's mean/std.
CLIPImageProcessor processor_of(const ParityCase& c) {
  CLIPImageProcessor p;
  const auto& params = c.params;
  if (params.contains("size") && params["size"].contains("shortest_edge"))
    p.shortest_edge = params["size"]["shortest_edge"].get<int64_t>();
  if (params.contains("crop_size")) {
    p.crop_height = params["crop_size"].value("height", p.crop_height);
    p.crop_width = params["crop_size"].value("width", p.crop_width);
  }
  if (params.contains("rescale_factor")) p.rescale_factor = params["rescale_factor"].get<double>();
  if (params.contains("image_mean")) p.image_mean = params["image_mean"].get<std::vector<double>>();
  if (params.contains("image_std")) p.image_std = params["image_std"].get<std::vector<double>>();
  if (params.value("resample", std::string("PIL.Image.BICUBIC")) != "PIL.Image.BICUBIC")
    throw ValidationError("case " + c.name + ": only PIL.Image.BICUBIC is run, got " +
                          params["resample"].get<std::string>());
  return p;
}

ParityResult run_clip_image_processor_case(const ParityCase& c) {
  const CLIPImageProcessor p = processor_of(c);
  ParityComparison cmp(c.tolerance);
  int64_t k = 0;
  for (; c.inputs.contains("image_uint8_" + std::to_string(k)); ++k) {
    const std::string s = std::to_string(k);
    const CLIPImageProcessorOutput out = p.preprocess({need(c, "image_uint8_" + s)});
    cmp.compare("resized_cropped_" + s, out.resized_cropped, need(c, "resized_cropped_" + s));  // uint8: exact
    cmp.compare("pixel_values_" + s, out.pixel_values, need(c, "pixel_values_" + s));
  }
  if (k == 0) cmp.fail("the case has no image_uint8_0 input");
  return cmp.result();
}

ParityResult run_image_encoder_case(const ParityCase& c) {
  c10::InferenceMode guard;
  auto encoder = CLIPVisionModelWithProjectionImpl::from_pretrained(parity_model_folder(c));
  ParityComparison cmp(c.tolerance);
  const CLIPVisionModelOutput out = encoder->forward(need(c, "pixel_values"), /*output_hidden_states=*/true);
  cmp.compare("image_embeds", out.image_embeds, need(c, "image_embeds"));
  cmp.compare("last_hidden_state", out.last_hidden_state, need(c, "last_hidden_state"));
  if (out.hidden_states.size() < 2) {
    cmp.fail("the encoder returned " + std::to_string(out.hidden_states.size()) + " hidden states");
    return cmp.result();
  }
  cmp.compare("hidden_states_penultimate", out.hidden_states[out.hidden_states.size() - 2],
              need(c, "hidden_states_penultimate"));
  cmp.compare("hidden_states_embeddings", out.hidden_states.front(), need(c, "hidden_states_embeddings"));
  return cmp.result();
}

ParityResult run_image_proj_case(const ParityCase& c) {
  c10::InferenceMode guard;
  // params.model is the adapter file (models_dir / "tiny-ip-adapter/ip-adapter_sd.safetensors").
  auto adapter = IPAdapterImpl::from_file(parity_model_folder(c));
  ParityComparison cmp(c.tolerance);
  const std::string expected_class = c.params.value("projection_class", std::string());
  if (!expected_class.empty() && adapter->image_proj->class_name() != expected_class)
    cmp.fail("the file loaded as " + adapter->image_proj->class_name() + ", diffusers built " + expected_class);
  if (c.params.contains("num_image_text_embeds") &&
      adapter->image_proj->num_tokens != c.params["num_image_text_embeds"].get<int64_t>())
    cmp.fail("num_tokens " + std::to_string(adapter->image_proj->num_tokens) + ", expected " +
             c.params["num_image_text_embeds"].dump());
  if (c.params.contains("resampler_config")) {
    const auto& r = c.params["resampler_config"];
    const auto* plus = dynamic_cast<IPAdapterPlusImageProjectionImpl*>(adapter->image_proj.get());
    if (!plus) {
      cmp.fail("the case has a resampler_config but the file did not load as a Resampler");
    } else {
      const auto& g = plus->config;
      for (auto [name, got] : {std::pair<const char*, int64_t>{"embed_dims", g.embed_dims},
                               {"output_dims", g.output_dims},
                               {"hidden_dims", g.hidden_dims},
                               {"depth", g.depth},
                               {"dim_head", g.dim_head},
                               {"heads", g.heads},
                               {"num_queries", g.num_queries}})
        if (r.contains(name) && r[name].get<int64_t>() != got)
          cmp.fail(std::string("resampler ") + name + " " + std::to_string(got) + ", expected " + r[name].dump());
      if (r.contains("ffn_ratio") && g.ff_inner_dim != static_cast<int64_t>(g.hidden_dims * r["ffn_ratio"].get<double>()))
        cmp.fail("resampler ff width " + std::to_string(g.ff_inner_dim) + ", expected hidden_dims · ffn_ratio");
    }
  }
  cmp.compare("ip_tokens", adapter->image_proj->project(need(c, "image_embeds")), need(c, "ip_tokens"));
  return cmp.result();
}

}  // namespace

void register_ip_adapter_case_runners() {
  // Exact names (as prefixes): ip_adapter_sd_ would also catch ip_adapter_sd_unet and the pipeline cases.
  register_component_case_prefix_runner("ip_adapter_clip_image_processor", run_clip_image_processor_case);
  register_component_case_prefix_runner("ip_adapter_image_encoder", run_image_encoder_case);
  register_component_case_prefix_runner("ip_adapter_sd_image_proj", run_image_proj_case);
  register_component_case_prefix_runner("ip_adapter_plus_sd_image_proj", run_image_proj_case);
  register_component_case_prefix_runner("ip_adapter_sdxl_image_proj", run_image_proj_case);
}

}  // namespace tessera
