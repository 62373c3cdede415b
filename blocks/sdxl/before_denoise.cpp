#include "blocks/sdxl/before_denoise.h"

#include "blocks/sd/sd_common.h"
#include "blocks/sd/sd_params.h"
#include "tessera/components.h"
#include "models/unet/unet_2d_condition.h"

namespace tessera {

namespace {
const InputParam original_size{"original_size", Kind::IntList, "(height, width) the image claims to come from"};
const InputParam crops_coords_top_left{"crops_coords_top_left", Kind::IntList, "(top, left) of the crop",
                                       false, Value(std::vector<int64_t>{0, 0})};
const InputParam target_size{"target_size", Kind::IntList, "(height, width) of the result"};
const InputParam negative_original_size{"negative_original_size", Kind::IntList, "original_size of the negatives"};
const InputParam negative_crops_coords_top_left{"negative_crops_coords_top_left", Kind::IntList,
                                                "crops_coords_top_left of the negatives"};
const InputParam negative_target_size{"negative_target_size", Kind::IntList, "target_size of the negatives"};
const InputParam height_req{"height", Kind::Int, "Image height in pixels", true};
const InputParam width_req{"width", Kind::Int, "Image width in pixels", true};
const InputParam pooled_req{"pooled_prompt_embeds", Kind::Tensor, "Pooled text embeddings [B*n, P]", true};
}  // namespace

BlockSpec SDXLPrepareAdditionalConditioningStep::spec() const {
  return BlockSpec(kId, kDescription)
      .component(sd::unet_component())
      .input(height_req)
      .input(width_req)
      .input(original_size)
      .input(crops_coords_top_left)
      .input(target_size)
      .input(negative_original_size)
      .input(negative_crops_coords_top_left)
      .input(negative_target_size)
      .input(pooled_req)
      .input(sd::batch_size)
      .input(sd::num_images_per_prompt)
      .output(sd::add_time_ids_out)
      .output(sd::negative_add_time_ids_out);
}

void SDXLPrepareAdditionalConditioningStep::run(Components& c, BlockState& s) const {
  auto unet = c.get_as<UNet2DConditionModelImpl>("unet");
  const std::vector<int64_t> hw{s.get_int("height"), s.get_int("width")};
  auto pair_of = [&](const std::string& name, const std::vector<int64_t>& fallback) {
    std::vector<int64_t> v = s.has(name) ? s.get(name).int_list(name) : fallback;
    if (v.size() != 2)
      throw InputError("'" + name + "' must have two numbers, got " + std::to_string(v.size()), {}, s.block_path());
    return v;
  };
  auto ids = [&](const std::vector<int64_t>& o, const std::vector<int64_t>& cr, const std::vector<int64_t>& t) {
    std::vector<float> v;
    for (const auto* part : {&o, &cr, &t})
      for (int64_t x : *part) v.push_back(static_cast<float>(x));
    return at::tensor(v, at::kFloat).unsqueeze(0);  // [1, 6]
  };
  const auto orig = pair_of(original_size.name, hw), crop = pair_of(crops_coords_top_left.name, {0, 0}),
             target = pair_of(target_size.name, hw);
  at::Tensor pos = ids(orig, crop, target);
  // StableDiffusionXLPipeline: the negative ids equal the positive ones unless both negative sizes are given;
  // then the negative crop defaults to (0, 0), not to the positive crop.
  at::Tensor neg = pos;
  if (s.has(negative_original_size.name) && s.has(negative_target_size.name))
    neg = ids(pair_of(negative_original_size.name, {}), pair_of(negative_crops_coords_top_left.name, {0, 0}),
              pair_of(negative_target_size.name, {}));

  const auto& cfg = unet->config;
  if (!cfg.addition_embed_type || *cfg.addition_embed_type != "text_time")
    throw InputError("the UNet has no text_time addition embedding: it is not an SDXL UNet", {}, s.block_path(),
                     "use recipes/sd/auto.yaml for SD 1.x/2.x models");
  const int64_t pooled_dim = s.tensor(pooled_req.name).size(-1);
  const int64_t passed = cfg.addition_time_embed_dim.value_or(0) * 6 + pooled_dim;
  const int64_t expected = cfg.projection_class_embeddings_input_dim.value_or(-1);
  if (passed != expected)
    throw InputError("model expects an added time embedding vector of length " + std::to_string(expected) +
                         ", but a vector of " + std::to_string(passed) + " was created (addition_time_embed_dim " +
                         std::to_string(cfg.addition_time_embed_dim.value_or(0)) + " × 6 + pooled width " +
                         std::to_string(pooled_dim) + ")",
                     {}, s.block_path(), "the text encoders and the UNet come from different models?");
  const int64_t batch = sd::total_batch(s);
  s.set(sd::add_time_ids_out.name, pos.repeat({batch, 1}));
  s.set(sd::negative_add_time_ids_out.name, neg.repeat({batch, 1}));
}

}  // namespace tessera
