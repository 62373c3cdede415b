// IP-Adapter component cases (manifest_control.json): image processor, image encoder, image projections, and the
// UNet with IP attention processors.
#include "tools/parity/ip_adapter_cases.h"

#include <algorithm>
#include <filesystem>

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/adapters/ip_adapter.h"
#include "models/adapters/ip_adapter_unet.h"
#include "models/unet/unet_2d_condition.h"
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

/// The UNet with the adapter's IP processors (params.model = the pipeline folder, params.ip_adapter = the file,
/// both under models_dir): `out` at params.ip_adapter_scale, `out_scale0` at scale 0 (= the plain UNet). The case's
/// `image_embeds` input is added_cond_kwargs["image_embeds"][0] before the projection, so it is projected here.
/// params.ip_layer_ids (diffusers' processor name → ip id → hidden size) is checked against
/// unet_ip_adapter_layers before the forward.
ParityResult run_ip_adapter_unet_case(const ParityCase& c) {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(parity_model_folder(c), "unet");
  const std::string file = c.params.value("ip_adapter", std::string());
  if (file.empty()) throw ValidationError("case " + c.name + ": params.ip_adapter (the adapter file) is missing");
  auto adapter = IPAdapterImpl::from_file((std::filesystem::path(c.models_dir) / file).string());
  ParityComparison cmp(c.tolerance);

  if (c.params.contains("ip_layer_ids")) {
    const auto layers = unet_ip_adapter_layers(*unet);
    const auto& ids = c.params["ip_layer_ids"];
    if (ids.size() != layers.size())
      cmp.fail("the UNet has " + std::to_string(layers.size()) + " attn2 layers, diffusers listed " +
               std::to_string(ids.size()));
    for (size_t i = 0; i < std::min(ids.size(), layers.size()); ++i) {
      const std::string proc = ids[i].value("processor", std::string());
      const std::string expected_path = proc.substr(0, proc.rfind(".processor"));
      if (layers[i].path != expected_path || layers[i].ip_id != ids[i].value("ip_id", int64_t{-1}) ||
          layers[i].attn->to_k->weight.size(0) != ids[i].value("hidden_size", int64_t{-1}))
        cmp.fail("ip layer " + std::to_string(i) + ": Tessera " + layers[i].path + " id " +
                 std::to_string(layers[i].ip_id) + " hidden " + std::to_string(layers[i].attn->to_k->weight.size(0)) +
                 ", diffusers " + ids[i].dump());
    }
  }

  const double scale = c.params.value("ip_adapter_scale", 1.0);
  install_ip_adapter(*unet, *adapter, scale);
  UNet2DConditionInputs in;
  if (c.inputs.contains("text_embeds")) in.text_embeds = need(c, "text_embeds");
  if (c.inputs.contains("time_ids")) in.time_ids = need(c, "time_ids");
  in.ip_hidden_states = {adapter->image_proj->project(need(c, "image_embeds"))};  // [B, 1, tokens, cross]
  const auto& t = c.params.at("timestep");
  const at::Tensor timestep =
      t.is_number_integer() ? at::scalar_tensor(t.get<int64_t>(), at::kLong) : at::scalar_tensor(t.get<double>(), at::kFloat);
  const at::Tensor sample = need(c, "sample"), ehs = need(c, "encoder_hidden_states");
  cmp.compare("out", unet->forward(sample, timestep, ehs, in), need(c, "out"));
  set_ip_adapter_scale(*unet, 0.0);
  cmp.compare("out_scale0", unet->forward(sample, timestep, ehs, in), need(c, "out_scale0"));
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
  register_component_case_prefix_runner("ip_adapter_sd_unet", run_ip_adapter_unet_case);
  register_component_case_prefix_runner("ip_adapter_sdxl_unet", run_ip_adapter_unet_case);
}

}  // namespace tessera
