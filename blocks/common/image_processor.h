#pragma once
/// Image and mask preparation for VAE-based pipelines, as diffusers' VaeImageProcessor does it for PIL
/// images (diffusers/src/diffusers/image_processor.py): size defaults rounded down to the VAE scale
/// factor, PIL's resampling filters (Lanczos by default), normalisation to [-1, 1], mask binarisation,
/// and the inverse denormalisation of decoded images. Free functions on tensors; no state.
///
///   ImageBatch init = read_image("init.png");                               // [1, 3, 600, 797] in [0, 1]
///   auto [h, w] = default_height_width(init.pixels, std::nullopt, std::nullopt, 8);  // 600, 792
///   at::Tensor x = preprocess_image(init.pixels, h, w);                     // [1, 3, 600, 792] in [-1, 1]
///   at::Tensor m = preprocess_mask(read_image("mask.png").pixels, h, w);    // [1, 1, 600, 792] of 0 / 1
///   ...
///   at::Tensor out = postprocess_image(vae_decoded);                        // [B, 3, H, W] in [0, 1]
///
/// Where this differs from diffusers: diffusers resizes 8-bit PIL images, so it rounds to uint8 after the
/// horizontal pass, after the vertical pass and after the grayscale conversion; here everything stays in
/// float (results agree to about one 8-bit step). Tensors given to diffusers directly (not PIL images) are
/// resized with torch's nearest interpolation instead; these functions always use the PIL path.
/// Errors are InputError.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace tessera {

/// (height, width) for an image [B, C, H, W]: `height`/`width` when given, else the image's own, each
/// rounded down to a multiple of `vae_scale_factor`, as get_default_height_width.
/// Throws when the image is not 4-D, a given size or the factor is not positive, or a result would be 0
/// (the image or the requested size is smaller than the factor).
std::pair<int64_t, int64_t> default_height_width(const at::Tensor& image, std::optional<int64_t> height,
                                                 std::optional<int64_t> width, int64_t vae_scale_factor);

/// Resizes images [B, C, H, W] (floating point, values in [0, 1], any device) to [B, C, height, width]
/// float32 with PIL's Image.resize filters: "lanczos" (diffusers' default), "bicubic", "bilinear" (alias
/// "linear"), "hamming", "box" — PIL's separable convolution, horizontal pass then vertical, the filter
/// widened by the scale factor when downscaling (antialiasing), results clipped to [0, 1] after each pass
/// as PIL clips to 8 bits — or "nearest" (the source pixel under each output pixel's centre). An axis whose
/// size does not change is not touched, so resizing to the same size returns the input values exactly.
/// Any positive size is accepted (no multiple-of-factor rule: this is a plain resize).
at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width,
                        const std::string& resample = "lanczos");

/// An RGB image batch [B, 3, H, W] in [0, 1] → [B, 3, height, width] float32 in [-1, 1] (resized, then
/// 2x - 1), as VaeImageProcessor.preprocess with do_normalize. height and width must be positive multiples
/// of `vae_scale_factor` (pipelines' check_inputs require it; use default_height_width to get such a size
/// from an arbitrary image). Values outside [0, 1] are rejected (diffusers would warn and skip the
/// normalisation of an image that is already in [-1, 1]; here that is an error, not a guess).
at::Tensor preprocess_image(const at::Tensor& image, int64_t height, int64_t width,
                            const std::string& resample = "lanczos", int64_t vae_scale_factor = 8);

/// A mask [B, 1, H, W], [B, 3, H, W] or [B, H, W] in [0, 1] → [B, 1, height, width] float32 of exactly
/// 0 and 1, as diffusers' inpainting mask processor (do_normalize=False, do_binarize=True,
/// do_convert_grayscale=True): RGB is converted to gray with PIL's "L" weights (0.299 R + 0.587 G +
/// 0.114 B), resized, then binarised (x < 0.5 → 0, else 1; white = repaint). diffusers resizes before the
/// gray conversion; both are linear, so the order only matters through clipping and rounding.
/// height and width must be positive multiples of `vae_scale_factor`, as for preprocess_image.
at::Tensor preprocess_mask(const at::Tensor& mask, int64_t height, int64_t width,
                           const std::string& resample = "lanczos", int64_t vae_scale_factor = 8);

/// VAE output in [-1, 1] (any shape, floating point) → (x / 2 + 0.5).clamp(0, 1) as float32, as diffusers'
/// denormalize; NaN stays NaN (write_png maps it to 0).
at::Tensor postprocess_image(const at::Tensor& decoded);

}  // namespace tessera
