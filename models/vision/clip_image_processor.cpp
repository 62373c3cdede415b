#include "models/vision/clip_image_processor.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "tessera/error.h"
#include "models/loading/config_reader.h"

namespace tessera {

namespace {

// ---- Pillow's 8-bit resampling (libImaging/Resample.c) ----

/// Pillow's filters and their supports (in source pixels at scale 1).
double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Pillow's Keys cubic
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}
double lanczos_filter(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }
double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // Pillow's float constants, kept
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_of(PILResample r) {
  switch (r) {
    case PILResample::Bicubic: return {bicubic_filter, 2.0};
    case PILResample::Bilinear: return {bilinear_filter, 1.0};
    case PILResample::Box: return {box_filter, 0.5};
    case PILResample::Lanczos: return {lanczos_filter, 3.0};
    case PILResample::Hamming: return {hamming_filter, 1.0};
    case PILResample::Nearest: break;
  }
  throw InputError("pil_resize_uint8: nearest has no convolution filter");
}

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS (22)

/// One output position's source window and fixed-point weights.
struct Taps {
  int64_t first = 0;
  std::vector<int32_t> weights;
};

/// precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size) (Pillow's in0 / in1 are floats; the sizes
/// here are exact in float).
std::vector<Taps> precompute_taps(int64_t in_size, int64_t out_size, const Filter& filter) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = filter.support * filterscale;
  const double ss = 1.0 / filterscale;
  std::vector<Taps> taps(static_cast<size_t>(out_size));
  std::vector<double> w;
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Pillow's "round": a C int cast (truncation toward zero) of value + 0.5, then clipped.
    int64_t xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    w.assign(static_cast<size_t>(std::max<int64_t>(xmax, 0)), 0.0);
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      w[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    Taps& t = taps[static_cast<size_t>(xx)];
    t.first = xmin;
    t.weights.resize(w.size());
    for (size_t x = 0; x < w.size(); ++x) {
      const double k = ww != 0.0 ? w[x] / ww : w[x];
      t.weights[x] = k < 0 ? static_cast<int32_t>(-0.5 + k * (1 << kPrecisionBits))
                           : static_cast<int32_t>(0.5 + k * (1 << kPrecisionBits));
    }
  }
  return taps;
}

/// Pillow's clip8: the accumulator (started at 2^21) shifted down by 22 bits (floor), clipped to [0, 255].
inline uint8_t clip8(int64_t acc) {
  const int64_t v = acc >> kPrecisionBits;  // arithmetic shift: floor for negative sums
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

/// One pass along `axis` (0: rows = vertical, 1: columns = horizontal) of a contiguous [H, W, C] uint8 image.
at::Tensor resample_axis(const at::Tensor& in, int axis, int64_t out_size, const Filter& filter) {
  const int64_t h = in.size(0), w = in.size(1), c = in.size(2);
  const int64_t in_size = axis == 0 ? h : w;
  const std::vector<Taps> taps = precompute_taps(in_size, out_size, filter);
  at::Tensor out = at::empty({axis == 0 ? out_size : h, axis == 0 ? w : out_size, c}, in.options());
  const uint8_t* src = in.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t out_w = out.size(1);
  const int64_t half = int64_t{1} << (kPrecisionBits - 1);
  for (int64_t y = 0; y < out.size(0); ++y) {
    for (int64_t x = 0; x < out_w; ++x) {
      const Taps& t = taps[static_cast<size_t>(axis == 0 ? y : x)];
      for (int64_t ch = 0; ch < c; ++ch) {
        int64_t acc = half;
        for (size_t i = 0; i < t.weights.size(); ++i) {
          const int64_t sy = axis == 0 ? t.first + static_cast<int64_t>(i) : y;
          const int64_t sx = axis == 0 ? x : t.first + static_cast<int64_t>(i);
          acc += static_cast<int64_t>(src[(sy * w + sx) * c + ch]) * t.weights[i];
        }
        dst[(y * out_w + x) * c + ch] = clip8(acc);
      }
    }
  }
  return out;
}

/// Python's floor division for the crop offsets.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

at::Tensor pil_resize_uint8(const at::Tensor& image, int64_t height, int64_t width, PILResample resample) {
  if (image.dim() != 3 || image.scalar_type() != at::kByte)
    throw InputError("pil_resize_uint8: image must be [H, W, C] uint8, got " + c10::str(image.sizes()) + " " +
                     c10::toString(image.scalar_type()));
  if (height <= 0 || width <= 0)
    throw InputError("pil_resize_uint8: size must be positive, got " + std::to_string(height) + "x" +
                     std::to_string(width));
  if (image.size(0) == 0 || image.size(1) == 0) throw InputError("pil_resize_uint8: the image is empty");
  at::Tensor x = image.to(at::kCPU).contiguous();
  if (x.size(0) == height && x.size(1) == width) return x.clone();  // Image.resize returns a copy
  if (resample == PILResample::Nearest) {
    // ImagingTransform's affine nearest: source = floor((i + 0.5) · in/out).
    auto index = [](int64_t in, int64_t out) {
      const double scale = static_cast<double>(in) / static_cast<double>(out);
      std::vector<int64_t> idx(static_cast<size_t>(out));
      for (int64_t i = 0; i < out; ++i)
        idx[static_cast<size_t>(i)] = std::min<int64_t>(in - 1, static_cast<int64_t>(std::floor((i + 0.5) * scale)));
      return at::tensor(idx, at::kLong);
    };
    return x.index_select(0, index(x.size(0), height)).index_select(1, index(x.size(1), width)).contiguous();
  }
  const Filter filter = filter_of(resample);
  // Pillow: horizontal pass first (only if the width changes), then vertical (only if the height changes).
  if (x.size(1) != width) x = resample_axis(x, 1, width, filter);
  if (x.size(0) != height) x = resample_axis(x, 0, height, filter);
  return x;
}

std::pair<int64_t, int64_t> shortest_edge_resize_size(int64_t height, int64_t width, int64_t shortest_edge) {
  const bool width_short = width <= height;
  const int64_t short_side = width_short ? width : height, long_side = width_short ? height : width;
  // int(requested_new_short * long / short): Python's true division, then truncation.
  const auto new_long =
      static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side));
  return width_short ? std::make_pair(new_long, shortest_edge) : std::make_pair(shortest_edge, new_long);
}

at::Tensor center_crop_chw(const at::Tensor& image, int64_t crop_height, int64_t crop_width) {
  const int64_t h = image.size(-2), w = image.size(-1);
  int64_t top = floor_div(h - crop_height, 2), left = floor_div(w - crop_width, 2);
  int64_t bottom = top + crop_height, right = left + crop_width;
  if (top >= 0 && bottom <= h && left >= 0 && right <= w)
    return image.slice(-2, top, bottom).slice(-1, left, right).contiguous();
  // Too small: zero-pad to at least the crop size (centred, ceil on the top/left), then crop.
  const int64_t new_h = std::max(crop_height, h), new_w = std::max(crop_width, w);
  at::Tensor padded = at::zeros({image.size(0), new_h, new_w}, image.options());
  const int64_t top_pad = (new_h - h + 1) / 2, left_pad = (new_w - w + 1) / 2;
  padded.slice(-2, top_pad, top_pad + h).slice(-1, left_pad, left_pad + w).copy_(image);
  top += top_pad;
  bottom += top_pad;
  left += left_pad;
  right += left_pad;
  return padded.slice(-2, std::max<int64_t>(0, top), std::min(new_h, bottom))
      .slice(-1, std::max<int64_t>(0, left), std::min(new_w, right))
      .contiguous();
}

// ---- CLIPImageProcessor ----

CLIPImageProcessor CLIPImageProcessor::from_config(ModelConfig& c) {
  CLIPImageProcessor p;
  p.do_resize = c.get_bool("do_resize", p.do_resize);
  if (c.has("size")) {
    const nlohmann::json size = c.json().at("size");
    c.accept("size");
    if (size.is_number_integer()) {
      p.shortest_edge = size.get<int64_t>();
    } else if (size.is_object() && size.contains("shortest_edge") && size["shortest_edge"].is_number_integer()) {
      p.shortest_edge = size["shortest_edge"].get<int64_t>();
    } else if (size.is_object() && size.contains("height") && size.contains("width") &&
               size["height"].is_number_integer() && size["width"].is_number_integer()) {
      p.shortest_edge.reset();
      p.size_height = size["height"].get<int64_t>();
      p.size_width = size["width"].get<int64_t>();
    } else {
      c.fail("size", "must be an int, {\"shortest_edge\": n} or {\"height\": h, \"width\": w}, got " + size.dump());
    }
  }
  const int64_t resample = c.get_int("resample", static_cast<int>(p.resample));
  if (resample < 0 || resample > 5) c.fail("resample", "must be a PIL filter number 0..5, got " + std::to_string(resample));
  p.resample = static_cast<PILResample>(resample);
  p.do_center_crop = c.get_bool("do_center_crop", p.do_center_crop);
  if (c.has("crop_size")) {
    const nlohmann::json crop = c.json().at("crop_size");
    c.accept("crop_size");
    if (crop.is_number_integer()) {
      p.crop_height = p.crop_width = crop.get<int64_t>();
    } else if (crop.is_object() && crop.contains("height") && crop.contains("width") &&
               crop["height"].is_number_integer() && crop["width"].is_number_integer()) {
      p.crop_height = crop["height"].get<int64_t>();
      p.crop_width = crop["width"].get<int64_t>();
    } else {
      c.fail("crop_size", "must be an int or {\"height\": h, \"width\": w}, got " + crop.dump());
    }
  }
  p.do_rescale = c.get_bool("do_rescale", p.do_rescale);
  p.rescale_factor = c.get_float("rescale_factor", p.rescale_factor);
  p.do_normalize = c.get_bool("do_normalize", p.do_normalize);
  p.image_mean = c.get_float_list("image_mean", p.image_mean);
  p.image_std = c.get_float_list("image_std", p.image_std);
  p.do_convert_rgb = c.get_bool("do_convert_rgb", p.do_convert_rgb);
  for (const char* f : {"image_processor_type", "feature_extractor_type", "processor_class"}) c.accept(f);
  if (p.image_mean.size() != 3) c.fail("image_mean", "must have 3 entries");
  if (p.image_std.size() != 3) c.fail("image_std", "must have 3 entries");
  for (double s : p.image_std)
    if (s == 0.0) c.fail("image_std", "must not contain 0");
  if ((p.shortest_edge && *p.shortest_edge <= 0) || (!p.shortest_edge && (p.size_height <= 0 || p.size_width <= 0)))
    c.fail("size", "must be positive");
  if (p.crop_height <= 0 || p.crop_width <= 0) c.fail("crop_size", "must be positive");
  return p;
}

CLIPImageProcessor CLIPImageProcessor::from_pretrained(const std::string& folder, const std::string& subfolder) {
  namespace fs = std::filesystem;
  const fs::path dir = subfolder.empty() ? fs::path(folder) : fs::path(folder) / subfolder;
  if (!fs::exists(dir / "preprocessor_config.json")) return CLIPImageProcessor();
  ModelConfig c = ModelConfig::from_folder(folder, subfolder, "preprocessor_config.json");
  CLIPImageProcessor p = from_config(c);
  c.finish();
  return p;
}

CLIPImageProcessor CLIPImageProcessor::with_size(int64_t size) const {
  CLIPImageProcessor p = *this;
  p.shortest_edge = size;
  p.crop_height = p.crop_width = size;
  return p;
}

CLIPImageProcessorOutput CLIPImageProcessor::preprocess(const std::vector<at::Tensor>& images) const {
  if (images.empty()) throw InputError("CLIPImageProcessor: no images given");
  std::vector<at::Tensor> cropped;
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string which = "CLIPImageProcessor: image " + std::to_string(i);
    at::Tensor img = images[i];
    if (img.dim() != 3 || img.scalar_type() != at::kByte || img.size(0) == 0 || img.size(1) == 0)
      throw InputError(which + " must be [H, W, C] uint8 (HWC RGB), got " + c10::str(img.sizes()) + " " +
                       c10::toString(img.scalar_type()));
    img = img.to(at::kCPU);
    if (do_convert_rgb) {
      if (img.size(2) == 1) img = img.expand({-1, -1, 3});
      else if (img.size(2) == 4) img = img.slice(2, 0, 3);  // PIL's RGBA -> RGB drops alpha (no compositing)
    }
    if (img.size(2) != 3) throw InputError(which + " must have 3 channels (RGB), got " + std::to_string(img.size(2)));
    img = img.contiguous();
    if (do_resize) {
      const auto [h, w] = shortest_edge
                              ? shortest_edge_resize_size(img.size(0), img.size(1), *shortest_edge)
                              : std::make_pair(size_height, size_width);
      img = pil_resize_uint8(img, h, w, resample);
    }
    at::Tensor chw = img.permute({2, 0, 1});  // [3, H, W]
    if (do_center_crop) chw = center_crop_chw(chw, crop_height, crop_width);
    if (!cropped.empty() && chw.sizes() != cropped.front().sizes())
      throw InputError(which + " comes out " + c10::str(chw.sizes()) + ", image 0 " +
                       c10::str(cropped.front().sizes()) + " (turn on do_center_crop to batch images of other sizes)");
    cropped.push_back(chw.contiguous());
  }
  CLIPImageProcessorOutput out;
  out.resized_cropped = at::stack(cropped);  // [B, 3, h, w] uint8
  // rescale: float64 multiply, then float32 (transformers' rescale); normalize in float32.
  at::Tensor x = out.resized_cropped.to(at::kDouble);
  if (do_rescale) x = x * rescale_factor;
  x = x.to(at::kFloat);
  if (do_normalize) {
    const at::Tensor mean = at::tensor(image_mean, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
    const at::Tensor std = at::tensor(image_std, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
    x = (x - mean) / std;
  }
  out.pixel_values = x.contiguous();
  return out;
}

}  // namespace tessera
