#include "blocks/sd/controlnet.h"

#include "blocks/common/image_processor.h"
#include "blocks/common/params.h"
#include "blocks/sd/denoise.h"
#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "models/controlnets/controlnet_model.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"

namespace tessera {

namespace {

/// "" for the first ControlNet, "_k" for the k-th (control_image_2, controlnet_2…).
std::string suffix(int64_t k) { return k == 1 ? std::string() : "_" + std::to_string(k); }

InputParam control_image(int64_t k) {
  return {"control_image" + suffix(k), Kind::Image,
          "The conditioning image of ControlNet " + std::to_string(k) +
              " (edges, depth, pose… as it was trained on), RGB in [0, 1]; one image, or one per prompt",
          true};
}
const InputParam control_image_resample{
    "control_image_resample", Kind::String,
    "Filter that resizes a control image of another size than the output: a PIL filter (lanczos, bicubic, "
    "bilinear, nearest…) as diffusers uses for PIL images, or torch_nearest (torch.nn.functional.interpolate's "
    "default, what diffusers uses for tensor inputs)",
    false, Value(std::string("lanczos"))};
const InputParam init_image{"image", Kind::Image, "The input image of image2image / inpainting (its size is the output's)"};
InputParam conditioning_scale(int64_t k) {
  return {"controlnet_conditioning_scale" + suffix(k), Kind::Float,
          "Factor of ControlNet " + std::to_string(k) + "'s residuals (diffusers' controlnet_conditioning_scale)",
          false, Value(1.0)};
}
InputParam guidance_start(int64_t k) {
  return {"control_guidance_start" + suffix(k), Kind::Float,
          "Fraction of the steps after which ControlNet " + std::to_string(k) + " starts to apply, in [0, 1)", false,
          Value(0.0)};
}
InputParam guidance_end(int64_t k) {
  return {"control_guidance_end" + suffix(k), Kind::Float,
          "Fraction of the steps after which ControlNet " + std::to_string(k) + " stops applying, in (0, 1]", false,
          Value(1.0)};
}
const InputParam guess_mode{"guess_mode", Kind::Bool,
                            "The ControlNets recognise the content without the prompt: they run on the conditional "
                            "pass only, residuals scaled from 0.1 (shallow) to 1.0 (mid block)",
                            false, Value(false)};
OutputParam controlnet_cond_out(int64_t k) {
  return {"controlnet_cond" + suffix(k), Kind::Tensor,
          "ControlNet " + std::to_string(k) + "'s conditioning image [B, C, H, W] in [0, 1] at the output size"};
}
InputParam controlnet_cond(int64_t k) {
  return {"controlnet_cond" + suffix(k), Kind::Tensor,
          "ControlNet " + std::to_string(k) + "'s conditioning image [B, C, H, W] in [0, 1] at the output size", true};
}
const InputParam index_param{"index", Kind::Int,
                             "Which ControlNet: 1 = control_image / component controlnet, k = control_image_k / "
                             "controlnet_k",
                             false, Value(int64_t{1})};
const InputParam controlnets_param{"controlnets", Kind::Int,
                                   "How many ControlNets apply (1 … 4): components controlnet, controlnet_2…, "
                                   "their residuals summed (diffusers' MultiControlNetModel)",
                                   false, Value(int64_t{1})};

int64_t checked_count(const ValueMap& p, const InputParam& decl, int64_t max) {
  const int64_t k = param_value(p, decl).to_int(decl.name);
  if (k < 1 || k > max)
    throw SpecError("block parameter '" + decl.name + "' is " + std::to_string(k) + "; it must be 1 … " +
                    std::to_string(max));
  return k;
}

/// InputError unless the ControlNet fits the UNet and the VAE of the pipeline.
void check_fits(const Components& c, const std::string& name, const ControlNetModelImpl& cn,
                const UNet2DConditionModelImpl& unet, const AutoencoderKLImpl& vae, const std::string& block_path) {
  const UNet2DConditionModelConfig& a = cn.config.unet;
  const UNet2DConditionModelConfig& u = unet.config;
  const std::string hint = "use a ControlNet trained for the model's family";
  if (a.cross_attention_dim != u.cross_attention_dim || a.addition_embed_type != u.addition_embed_type)
    throw InputError("the ControlNet (" + sd::component_where(c, name) + ") is for " + sd::unet_family(a) +
                         ", the UNet (" + sd::component_where(c, "unet") + ") is " + sd::unet_family(u) +
                         " (cross-attention width " +
                         std::to_string(a.cross_attention_dim.empty() ? 0 : a.cross_attention_dim.front()) + " vs " +
                         std::to_string(u.cross_attention_dim.empty() ? 0 : u.cross_attention_dim.front()) + ")",
                     {}, block_path, hint);
  if (a.addition_embed_type && a.projection_class_embeddings_input_dim != u.projection_class_embeddings_input_dim)
    throw InputError("the ControlNet (" + sd::component_where(c, name) + ") takes SDXL conditioning of width " +
                         std::to_string(a.projection_class_embeddings_input_dim.value_or(0)) + ", the UNet's is " +
                         std::to_string(u.projection_class_embeddings_input_dim.value_or(0)),
                     {}, block_path, hint);
  if (a.in_channels != vae.config.latent_channels || a.in_channels > u.in_channels)
    throw InputError("the ControlNet (" + sd::component_where(c, name) + ") takes " + std::to_string(a.in_channels) +
                         " latent channels, the VAE makes " + std::to_string(vae.config.latent_channels) +
                         " and the UNet takes " + std::to_string(u.in_channels),
                     {}, block_path, hint);
  const int64_t cn_factor = int64_t{1} << (cn.config.conditioning_embedding_out_channels.size() - 1);
  if (cn_factor != sd::vae_scale_factor(vae))
    throw InputError("the ControlNet (" + sd::component_where(c, name) + ") downsamples its control image by " +
                         std::to_string(cn_factor) + ", the VAE by " + std::to_string(sd::vae_scale_factor(vae)) +
                         ": its residuals would not fit the latents",
                     {}, block_path, hint);
}

void check_window(const BlockState& s, int64_t k) {
  const std::string a = guidance_start(k).name, b = guidance_end(k).name;
  const double start = s.get_float(a), end = s.get_float(b);
  if (!(start >= 0.0 && start < 1.0) || !(end > 0.0 && end <= 1.0) || start >= end)
    throw InputError(a + " " + std::to_string(start) + " and " + b + " " + std::to_string(end) +
                         " do not make a window: need 0 <= start < end <= 1",
                     {}, s.block_path(), "e.g. --set " + a + "=0.0 --set " + b + "=0.8");
}

}  // namespace

ComponentSpec sd::controlnet_component(int64_t k) {
  ComponentSpec c;
  c.name = "controlnet" + suffix(k);
  c.type = "ControlNetModel";
  c.description = "ControlNet " + std::to_string(k) + " (a diffusers ControlNetModel folder)";
  return c;
}

// ---------------------------------------------------------------- sd.prepare_control_image

SDPrepareControlImageStep::SDPrepareControlImageStep(const ValueMap& p) : index_(checked_count(p, index_param, 4)) {}

std::vector<InputParam> SDPrepareControlImageStep::params() { return {index_param}; }

BlockSpec SDPrepareControlImageStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::controlnet_component(index_))
      .component(sd::unet_component())
      .component(sd::vae_component())
      .input(control_image(index_))
      .input(control_image_resample)
      .input(init_image)
      .input(sd::height)
      .input(sd::width)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .input(guidance_start(index_))
      .input(guidance_end(index_))
      .output(controlnet_cond_out(index_))
      .output(sd::height_out)
      .output(sd::width_out);
}

void SDPrepareControlImageStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  check_window(s, index_);
  const std::string name = sd::controlnet_component(index_).name;
  const std::string image_name = control_image(index_).name;
  auto cn = c.get_as<ControlNetModelImpl>(name);
  auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
  auto vae = c.get_as<AutoencoderKLImpl>("vae");
  check_fits(c, name, *cn, *unet, *vae, s.block_path());
  const int64_t f = sd::vae_scale_factor(*vae);

  const at::Tensor& pixels = s.get(image_name).images(image_name).pixels;  // [b, C, H, W]
  if (pixels.dim() != 4 || pixels.size(1) != cn->config.conditioning_channels)
    throw InputError(image_name + " " + Value(pixels).repr() + " must be [B, " +
                         std::to_string(cn->config.conditioning_channels) + ", H, W], as the ControlNet (" +
                         sd::component_where(c, name) + ") takes",
                     {}, s.block_path());
  auto opt = [&](const std::string& key) {
    return s.has(key) ? std::optional<int64_t>(s.get_int(key)) : std::nullopt;
  };
  // The output size: height/width when given, else the input image's (image2image, inpainting: the latents come
  // from it), else the control image's own, rounded down to the VAE factor.
  const at::Tensor& reference = s.has(init_image.name) ? s.get(init_image.name).images(init_image.name).pixels : pixels;
  std::pair<int64_t, int64_t> hw;
  try {
    hw = default_height_width(reference, opt(sd::height.name), opt(sd::width.name), f);
  } catch (const Error& e) {
    throw InputError(e.message(), {}, s.block_path(), e.hint());
  }
  const auto [h, w] = hw;
  sd::check_image_size(h, w, f, s.block_path());

  at::Tensor image = pixels.to(at::kFloat);
  if (image.size(2) != h || image.size(3) != w) {
    const std::string& resample = s.get_string(control_image_resample.name);
    try {
      image = resample == "torch_nearest" ? at::upsample_nearest2d(image, {h, w})  // src = floor(dst · in / out)
                                          : resize_image(image, h, w, resample);
    } catch (const Error& e) {
      throw InputError(image_name + ": " + e.message(), {}, s.block_path(),
                       "control_image_resample is one of lanczos, bicubic, bilinear, hamming, box, nearest, "
                       "torch_nearest");
    }
  }
  // diffusers' prepare_image: one image serves every prompt; else one per prompt, repeated per image per prompt.
  const int64_t batch = s.get_int(sd::batch_size.name);
  const int64_t total = sd::total_batch(s);
  const int64_t rows = image.size(0);
  if (rows != 1 && rows != batch)
    throw InputError(image_name + " has " + std::to_string(rows) + " images for " + std::to_string(batch) +
                         " prompts: give one image, or one per prompt",
                     {}, s.block_path());
  image = image.repeat_interleave(rows == 1 ? total : total / batch, 0);  // [B·n, C, h, w]
  s.set(controlnet_cond_out(index_).name, image);
  s.set(sd::height_out.name, Value(h));
  s.set(sd::width_out.name, Value(w));
}

// ---------------------------------------------------------------- sd.loop_controlnet_denoiser

SDLoopControlNetDenoiserStep::SDLoopControlNetDenoiserStep(const ValueMap& p)
    : controlnets_(checked_count(p, controlnets_param, 4)) {}

std::vector<InputParam> SDLoopControlNetDenoiserStep::params() { return {controlnets_param}; }

BlockSpec SDLoopControlNetDenoiserStep::spec() const {
  BlockSpec spec = SDLoopDenoiserStep().spec();
  spec.id = kId;
  spec.description = kDescription;
  spec.input(sd::timesteps).input(guess_mode);
  for (int64_t k = 1; k <= controlnets_; ++k)
    spec.component(sd::controlnet_component(k))
        .input(controlnet_cond(k))
        .input(conditioning_scale(k))
        .input(guidance_start(k))
        .input(guidance_end(k));
  return spec;
}

void SDLoopControlNetDenoiserStep::run(Components& c, BlockState& s) const {
  c10::InferenceMode guard;
  struct Unit {
    std::shared_ptr<ControlNetModelImpl> model;
    std::string field;  // the guider field of its control image
    double scale;       // × keep of this step
  };
  std::vector<Unit> units;
  bool guess = s.get_bool(guess_mode.name);
  // diffusers' controlnet_keep over the loop's timesteps (after strength), with Python's float division.
  const int64_t i = s.get_int(sd::i.name);
  const auto n = static_cast<double>(s.tensor(sd::timesteps.name).size(0));
  GuiderFields extra;
  for (int64_t k = 1; k <= controlnets_; ++k) {
    check_window(s, k);
    auto cn = c.get_as<ControlNetModelImpl>(sd::controlnet_component(k).name);
    guess = guess || cn->config.global_pool_conditions;
    const bool keep = !(static_cast<double>(i) / n < s.get_float(guidance_start(k).name) ||
                        static_cast<double>(i + 1) / n > s.get_float(guidance_end(k).name));
    const at::Tensor& cond = s.tensor(controlnet_cond(k).name);
    extra[controlnet_cond(k).name] = {cond, cond};  // every pass sees the same control image
    // A ControlNet outside its window adds residuals × 0: it is not run (the sum is the same).
    if (keep) units.push_back({cn, controlnet_cond(k).name, s.get_float(conditioning_scale(k).name)});
  }
  if (guess) {
    // 1 on the rows of conditional passes, 0 on unconditional ones: guess mode runs the ControlNets on the former.
    const at::Tensor ones = at::ones({s.tensor(controlnet_cond(1).name).size(0)}, at::kFloat);
    extra["controlnet_conditional"] = {ones, at::zeros_like(ones)};
  }
  const at::Tensor& t = s.tensor(sd::t.name);
  sd::UNetCallHook residuals = [&](const std::map<std::string, at::Tensor>& in, UNet2DConditionInputs& unet_in) {
    if (units.empty()) return;  // the UNet alone gives the same prediction
    at::Tensor sample = in.at("sample");
    at::Tensor ehs = in.at("encoder_hidden_states");
    UNet2DConditionInputs cn_in;
    cn_in.text_embeds = unet_in.text_embeds;
    cn_in.time_ids = unet_in.time_ids;
    const int64_t total = sample.size(0);
    at::Tensor rows;  // guess mode: the conditional rows of this call, when not all of them
    auto pick = [&](const at::Tensor& x) { return x.defined() && rows.defined() ? x.index_select(0, rows) : x; };
    if (guess) {
      rows = in.at("controlnet_conditional").nonzero().flatten();  // [k]
      if (rows.numel() == 0) return;  // only unconditional passes in this call: zero residuals
      if (rows.numel() == total) rows = at::Tensor();
      sample = pick(sample), ehs = pick(ehs);
      cn_in.text_embeds = pick(cn_in.text_embeds), cn_in.time_ids = pick(cn_in.time_ids);
    }
    ControlNetOutput sum;
    for (const Unit& u : units) {
      // An inpainting UNet's input carries the mask and masked-image latents after the latents.
      const at::Tensor x = sample.narrow(1, 0, u.model->config.unet.in_channels);
      ControlNetOutput out = u.model->forward(x, t, ehs, pick(in.at(u.field)), cn_in, u.scale, guess);
      if (sum.down_block_res_samples.empty()) {
        sum = std::move(out);
        continue;
      }
      if (out.down_block_res_samples.size() != sum.down_block_res_samples.size())
        throw InputError("the ControlNets give " + std::to_string(sum.down_block_res_samples.size()) + " and " +
                             std::to_string(out.down_block_res_samples.size()) + " residuals: they are not of one UNet",
                         {}, s.block_path());
      for (size_t j = 0; j < out.down_block_res_samples.size(); ++j)
        sum.down_block_res_samples[j] = sum.down_block_res_samples[j] + out.down_block_res_samples[j];
      sum.mid_block_res_sample = sum.mid_block_res_sample + out.mid_block_res_sample;
    }
    if (rows.defined()) {  // scatter the conditional rows into zeros for the whole call
      auto spread = [&](const at::Tensor& r) {
        std::vector<int64_t> shape = r.sizes().vec();
        shape[0] = total;
        return at::zeros(shape, r.options()).index_copy_(0, rows, r);
      };
      for (at::Tensor& r : sum.down_block_res_samples) r = spread(r);
      sum.mid_block_res_sample = spread(sum.mid_block_res_sample);
    }
    unet_in.down_block_additional_residuals = std::move(sum.down_block_res_samples);
    unet_in.mid_block_additional_residual = sum.mid_block_res_sample;
  };
  s.set(sd::noise_pred_out.name, sd::guided_unet_prediction(c, s, extra, residuals));
}

}  // namespace tessera
