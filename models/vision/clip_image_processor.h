#pragma once
/// transformers' CLIPImageProcessor (the slow, PIL-based one; models/clip/image_processing_clip.py) for uint8 RGB
/// images: resize (shortest edge to `size`, PIL resampling on the 8-bit image exactly as Pillow does it), centre
/// crop, x · rescale_factor, (x - mean) / std. This is what IP-Adapter pipelines feed the image encoder.
///
///   CLIPImageProcessor p = CLIPImageProcessor::from_pretrained("IP-Adapter/models", "image_encoder");  // or {}
///   CLIPImageProcessorOutput out = p.preprocess({image_hwc_uint8});
///   auto enc_out = image_encoder->forward(out.pixel_values);  // [1, 3, crop, crop] float32
///
/// Lives in models/ (not blocks/common/image_processor) because it is the image encoder's own preprocessing, bit
/// exact on uint8 like Pillow, whereas blocks/common's resize_image works in float; and because the models
/// library (image encoder, parity runners) must not depend on the blocks library.
/// Errors are InputError (bad images) and ModelLoadError (bad preprocessor_config.json).
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class ModelConfig;

/// PIL's resampling filters by their Image.Resampling numbers (transformers stores `resample` as that int).
enum class PILResample : int { Nearest = 0, Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };

/// Pillow's Image.resize of an 8-bit image: `image` [H, W, C] uint8 (any C) → [height, width, C] uint8. Separable
/// convolution as libImaging/Resample.c: per output pixel the window [int(c - support + 0.5), int(c + support +
/// 0.5)) around c = (i + 0.5) · in/out, support = filter support · max(1, in/out), weights normalised to sum 1 then
/// converted to 22-bit fixed point (round half away from zero); horizontal pass first, then vertical, each
/// accumulated in integers from 2^21 (rounding) and clipped to [0, 255]. An axis whose size does not change is not
/// resampled (same size: a copy). No reducing_gap (transformers passes None). Nearest: the source pixel
/// floor((i + 0.5) · in/out).
at::Tensor pil_resize_uint8(const at::Tensor& image, int64_t height, int64_t width,
                            PILResample resample = PILResample::Bicubic);

/// The (height, width) transformers' get_resize_output_image_size gives for resizing the shortest edge to
/// `shortest_edge`: the other edge is int(shortest_edge · long / short) (truncated, Python float division).
std::pair<int64_t, int64_t> shortest_edge_resize_size(int64_t height, int64_t width, int64_t shortest_edge);

/// transformers' center_crop on [C, H, W]: top = (H - crop_h) // 2, left = (W - crop_w) // 2 (floor division);
/// an image smaller than the crop is first zero-padded (centred, ceil of half the missing size on the top/left).
at::Tensor center_crop_chw(const at::Tensor& image, int64_t crop_height, int64_t crop_width);

/// preprocess's outputs.
struct CLIPImageProcessorOutput {
  at::Tensor pixel_values;     ///< [B, 3, crop_h, crop_w] float32, normalised
  at::Tensor resized_cropped;  ///< [B, 3, crop_h, crop_w] uint8: the image after resize and crop (before rescale)
};

/// CLIPImageProcessor's settings with its defaults (224 / 224, OpenAI CLIP mean and std).
struct CLIPImageProcessor {
  bool do_resize = true;
  /// size {"shortest_edge": n} (also a bare int), or {"height", "width"} for an exact size.
  std::optional<int64_t> shortest_edge = 224;
  int64_t size_height = 0, size_width = 0;  ///< used when shortest_edge is unset
  PILResample resample = PILResample::Bicubic;
  bool do_center_crop = true;
  int64_t crop_height = 224, crop_width = 224;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean = {0.48145466, 0.4578275, 0.40821073};
  std::vector<double> image_std = {0.26862954, 0.26130258, 0.27577711};
  bool do_convert_rgb = true;

  /// Reads a preprocessor_config.json's fields (unknown ones are logged by the caller's finish()).
  static CLIPImageProcessor from_config(ModelConfig& config);
  /// `folder/subfolder/preprocessor_config.json` when it exists, else the defaults (diffusers' IP-Adapter
  /// loader builds CLIPImageProcessor(size=image_size, crop_size=image_size) when the folder has none: use
  /// with_size for that).
  static CLIPImageProcessor from_pretrained(const std::string& folder, const std::string& subfolder = {});
  /// A copy with shortest edge and crop both `size` (CLIPImageProcessor(size=n, crop_size=n)).
  CLIPImageProcessor with_size(int64_t size) const;

  /// images: each [H, W, C] uint8 RGB (C = 3; C = 1 is repeated, C = 4 drops alpha, as PIL's convert("RGB")
  /// when do_convert_rgb), sizes may differ. Every image must come out at the same size (with centre crop on,
  /// always). InputError naming the image otherwise.
  CLIPImageProcessorOutput preprocess(const std::vector<at::Tensor>& images) const;
};

}  // namespace tessera
