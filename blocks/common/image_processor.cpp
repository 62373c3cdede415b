#include "blocks/common/image_processor.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "tessera/error.h"

namespace tessera {

namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

[[noreturn]] void fail(const std::string& what, const std::string& message, const std::string& hint = {}) {
  throw InputError(what + ": " + message, {}, {}, hint);
}

void check_defined_float(const std::string& what, const at::Tensor& t) {
  if (!t.defined()) fail(what, "the tensor is undefined");
  if (!at::isFloatingType(t.scalar_type()))
    fail(what, std::string("expected floating-point values, got ") + at::toString(t.scalar_type()));
}

void check_unit_range(const std::string& what, const at::Tensor& t) {
  if (t.numel() == 0) return;
  double lo = t.min().item<double>(), hi = t.max().item<double>();
  if (std::isnan(lo) || std::isnan(hi) || lo < 0.0 || hi > 1.0)
    fail(what, "expected values in [0, 1], got [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
         "pass pixels before any normalisation to [-1, 1] (as read_image returns them)");
}

void check_target_size(const std::string& what, int64_t height, int64_t width, int64_t factor) {
  if (factor < 1) fail(what, "vae_scale_factor must be positive, got " + std::to_string(factor));
  if (height < 1 || width < 1)
    fail(what, "height and width must be positive, got " + std::to_string(height) + "x" + std::to_string(width));
  if (height % factor != 0 || width % factor != 0)
    fail(what,
         "height and width must be multiples of the VAE scale factor " + std::to_string(factor) + ", got " +
             std::to_string(height) + "x" + std::to_string(width),
         "round them down with default_height_width");
}

// ---------------------------------------------------------------- PIL's filters (Resample.c)

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}
double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  return std::sin(x) / x * (0.54 + 0.46 * std::cos(x));
}
double bicubic_filter(double x) {  // Keys' cubic convolution, a = -0.5
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}
double lanczos_filter(double x) { return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0; }

struct Filter {
  double (*fn)(double);
  double support;  // half-width at scale 1
};

/// The filter named as in diffusers' PIL_INTERPOLATION; nullopt for "nearest" (not a convolution in PIL).
std::optional<Filter> filter_named(const std::string& resample) {
  if (resample == "lanczos") return Filter{lanczos_filter, 3.0};
  if (resample == "bicubic") return Filter{bicubic_filter, 2.0};
  if (resample == "bilinear" || resample == "linear") return Filter{bilinear_filter, 1.0};
  if (resample == "hamming") return Filter{hamming_filter, 1.0};
  if (resample == "box") return Filter{box_filter, 0.5};
  if (resample == "nearest") return std::nullopt;
  fail("resize_image", "unknown resample filter '" + resample + "'",
       "use lanczos, bicubic, bilinear, hamming, box or nearest");
}

/// Per output pixel: the first input pixel, the number of taps and their weights (normalised to sum 1).
struct Taps {
  int64_t ksize = 0;                // stride of `weights`
  std::vector<int64_t> first, count;  // [out]
  std::vector<double> weights;      // [out, ksize]
};

/// PIL's precompute_coeffs: output pixel i has its centre at (i + 0.5) * scale in input coordinates;
/// downscaling widens the filter by the scale (support * scale taps each side), upscaling does not.
Taps pil_taps(int64_t in_size, int64_t out_size, const Filter& f) {
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = f.support * filter_scale;
  Taps t;
  t.ksize = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size), t.count.resize(out_size), t.weights.assign(out_size * t.ksize, 0.0);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (double(i) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);  // PIL truncates after +0.5
    const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), in_size);
    double* w = &t.weights[i * t.ksize];
    double sum = 0.0;
    for (int64_t x = lo; x < hi; ++x) sum += w[x - lo] = f.fn((double(x) - center + 0.5) / filter_scale);
    if (sum != 0.0)
      for (int64_t k = 0; k < hi - lo; ++k) w[k] /= sum;
    t.first[i] = lo, t.count[i] = hi - lo;
  }
  return t;
}

/// One output value: sum of taps over `in` (elements `step` apart), clipped to [0, 1] as PIL clips to 8 bits.
float apply_taps(const Taps& t, int64_t i, const float* in, int64_t step) {
  const double* w = &t.weights[i * t.ksize];
  const float* p = in + t.first[i] * step;
  double acc = 0.0;
  for (int64_t k = 0; k < t.count[i]; ++k) acc += w[k] * double(p[k * step]);
  return float(std::min(std::max(acc, 0.0), 1.0));
}

/// Horizontal pass: x [P, H, W] contiguous → [P, H, out_w].
at::Tensor resample_width(const at::Tensor& x, int64_t out_w, const Filter& f) {
  const int64_t planes = x.size(0), h = x.size(1), w = x.size(2);
  const Taps taps = pil_taps(w, out_w, f);
  at::Tensor out = at::empty({planes, h, out_w}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, planes * h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      for (int64_t i = 0; i < out_w; ++i) dst[row * out_w + i] = apply_taps(taps, i, src + row * w, 1);
  });
  return out;
}

/// Vertical pass: x [P, H, W] contiguous → [P, out_h, W].
at::Tensor resample_height(const at::Tensor& x, int64_t out_h, const Filter& f) {
  const int64_t planes = x.size(0), h = x.size(1), w = x.size(2);
  const Taps taps = pil_taps(h, out_h, f);
  at::Tensor out = at::empty({planes, out_h, w}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, planes * out_h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / out_h, i = r % out_h;
      for (int64_t col = 0; col < w; ++col)
        dst[r * w + col] = apply_taps(taps, i, src + plane * h * w + col, w);
    }
  });
  return out;
}

/// Source index under each output pixel's centre, floor((i + 0.5) * in / out), as PIL's NEAREST: [out].
at::Tensor nearest_indices(int64_t in_size, int64_t out_size) {
  at::Tensor index = at::empty({out_size}, at::kLong);
  int64_t* p = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < out_size; ++i) p[i] = (2 * i + 1) * in_size / (2 * out_size);  // exact integer floor
  return index;
}

}  // namespace

std::pair<int64_t, int64_t> default_height_width(const at::Tensor& image, std::optional<int64_t> height,
                                                 std::optional<int64_t> width, int64_t vae_scale_factor) {
  const std::string what = "default_height_width";
  if (!image.defined() || image.dim() != 4)
    fail(what, "expected an image [B, C, H, W], got " + (image.defined() ? shape_str(image) : "undefined"));
  if (vae_scale_factor < 1) fail(what, "vae_scale_factor must be positive, got " + std::to_string(vae_scale_factor));
  if ((height && *height < 1) || (width && *width < 1)) fail(what, "a requested height or width is not positive");
  const int64_t h = height.value_or(image.size(2)), w = width.value_or(image.size(3));
  const int64_t rh = h - h % vae_scale_factor, rw = w - w % vae_scale_factor;  // round down
  if (rh == 0 || rw == 0)
    fail(what, std::to_string(h) + "x" + std::to_string(w) + " is smaller than the VAE scale factor " +
                   std::to_string(vae_scale_factor));
  return {rh, rw};
}

at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width, const std::string& resample) {
  const std::string what = "resize_image";
  check_defined_float(what, image);
  if (image.dim() != 4) fail(what, "expected images [B, C, H, W], got " + shape_str(image));
  if (height < 1 || width < 1)
    fail(what, "height and width must be positive, got " + std::to_string(height) + "x" + std::to_string(width));
  std::optional<Filter> filter = filter_named(resample);  // before any work: an unknown name always fails
  const int64_t b = image.size(0), c = image.size(1), h = image.size(2), w = image.size(3);
  // A copy even when nothing needs resizing, so that the result never aliases the caller's tensor.
  at::Tensor x = image.detach().to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  check_unit_range(what, x);
  if (!filter) {
    x = x.index_select(3, nearest_indices(w, width)).index_select(2, nearest_indices(h, height));
    return x.contiguous().to(image.device());
  }
  at::Tensor planes = x.view({b * c, h, w});                                   // [P, H, W]
  if (width != w) planes = resample_width(planes, width, *filter);             // [P, H, width]
  if (height != h) planes = resample_height(planes, height, *filter);          // [P, height, width]
  return planes.view({b, c, height, width}).to(image.device());
}

at::Tensor preprocess_image(const at::Tensor& image, int64_t height, int64_t width, const std::string& resample,
                            int64_t vae_scale_factor) {
  const std::string what = "preprocess_image";
  check_defined_float(what, image);
  if (image.dim() != 4 || image.size(1) != 3)
    fail(what, "expected RGB images [B, 3, H, W], got " + shape_str(image));
  check_target_size(what, height, width, vae_scale_factor);
  at::Tensor x = resize_image(image, height, width, resample);  // [B, 3, height, width] in [0, 1]
  return x.mul(2.0).sub_(1.0);                                   // [-1, 1]
}

at::Tensor preprocess_mask(const at::Tensor& mask, int64_t height, int64_t width, const std::string& resample,
                           int64_t vae_scale_factor) {
  const std::string what = "preprocess_mask";
  check_defined_float(what, mask);
  at::Tensor m = mask.dim() == 3 ? mask.unsqueeze(1) : mask;  // [B, H, W] → [B, 1, H, W]
  if (m.dim() != 4 || (m.size(1) != 1 && m.size(1) != 3))
    fail(what, "expected a mask [B, 1, H, W], [B, 3, H, W] or [B, H, W], got " + shape_str(mask));
  check_target_size(what, height, width, vae_scale_factor);
  check_unit_range(what, m);
  if (m.size(1) == 3) {  // PIL's convert("L"): L = (299 R + 587 G + 114 B) / 1000
    at::Tensor weights = at::tensor({0.299, 0.587, 0.114}, m.options().dtype(at::kFloat)).view({1, 3, 1, 1});
    m = (m.to(at::kFloat) * weights).sum(1, /*keepdim=*/true);  // [B, 1, H, W]
    m.clamp_(0.0, 1.0);  // float rounding may push an all-white pixel a hair above 1
  }
  at::Tensor x = resize_image(m, height, width, resample);  // [B, 1, height, width] in [0, 1]
  return (x >= 0.5).to(at::kFloat);                         // x < 0.5 → 0, else 1
}

at::Tensor postprocess_image(const at::Tensor& decoded) {
  check_defined_float("postprocess_image", decoded);
  return decoded.to(at::kFloat).mul(0.5).add_(0.5).clamp_(0.0, 1.0);
}

}  // namespace tessera
