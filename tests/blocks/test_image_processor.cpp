// Image and mask preparation (blocks/common/image_processor.h), checked against values computed here
// by hand or straight from the filter formulas, not against the implementation's own helpers.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "blocks/common/image_processor.h"
#include "tessera/error.h"

using namespace tessera;
using Catch::Matchers::Contains;

namespace {

/// Lanczos-3 as the textbook defines it: sinc(x) sinc(x / 3) on |x| < 3.
double lanczos3(double x) {
  auto sinc = [](double v) { return v == 0.0 ? 1.0 : std::sin(M_PI * v) / (M_PI * v); };
  return std::fabs(x) < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
}

/// A 1-D antialiased Lanczos downscale written from the definition: output pixel i covers input
/// [i * s, (i + 1) * s) with s = in / out; every input pixel x (centre x + 0.5) weighs
/// lanczos3((x + 0.5 - centre) / s), and the weights are normalised to sum to 1.
std::vector<double> lanczos_downscale_1d(const std::vector<double>& in, int out_size) {
  const double s = double(in.size()) / out_size;
  std::vector<double> out;
  for (int i = 0; i < out_size; ++i) {
    const double centre = (i + 0.5) * s;
    double acc = 0.0, sum = 0.0;
    for (size_t x = 0; x < in.size(); ++x) {
      double wgt = lanczos3((double(x) + 0.5 - centre) / s);
      acc += wgt * in[x], sum += wgt;
    }
    out.push_back(acc / sum);
  }
  return out;
}

at::Tensor row_image(const std::vector<double>& values) {  // [1, 1, 1, W]
  return at::tensor(values, at::kDouble).to(at::kFloat).view({1, 1, 1, int64_t(values.size())});
}

at::Tensor checkerboard(int64_t n) {  // [1, 1, n, n], (x + y) % 2
  at::Tensor i = at::arange(n, at::kLong);
  return (i.view({n, 1}) + i.view({1, n})).remainder(2).to(at::kFloat).view({1, 1, n, n});
}

double at2(const at::Tensor& t, int64_t y, int64_t x) { return t[0][0][y][x].item<double>(); }

}  // namespace

TEST_CASE("default_height_width rounds the image's or the requested size down to the factor", "[image]") {
  at::Tensor image = at::zeros({1, 3, 600, 797});
  CHECK(default_height_width(image, std::nullopt, std::nullopt, 8) == std::pair<int64_t, int64_t>{600, 792});
  CHECK(default_height_width(image, 513, std::nullopt, 8) == std::pair<int64_t, int64_t>{512, 792});
  CHECK(default_height_width(image, 64, 100, 16) == std::pair<int64_t, int64_t>{64, 96});
  CHECK(default_height_width(image, std::nullopt, std::nullopt, 1) == std::pair<int64_t, int64_t>{600, 797});

  CHECK_THROWS_AS(default_height_width(at::zeros({3, 8, 8}), std::nullopt, std::nullopt, 8), InputError);
  CHECK_THROWS_WITH(default_height_width(at::zeros({1, 3, 5, 40}), std::nullopt, std::nullopt, 8),
                    Contains("smaller than the VAE scale factor 8"));
  CHECK_THROWS_AS(default_height_width(image, 0, std::nullopt, 8), InputError);
  CHECK_THROWS_AS(default_height_width(image, std::nullopt, std::nullopt, 0), InputError);
}

TEST_CASE("resize_image to the same size is exact for every filter and copies", "[image]") {
  at::Tensor image = at::rand({2, 3, 5, 7});
  for (const char* f : {"lanczos", "bicubic", "bilinear", "linear", "hamming", "box", "nearest"}) {
    INFO(f);
    at::Tensor out = resize_image(image, 5, 7, f);
    CHECK(out.scalar_type() == at::kFloat);
    CHECK(at::equal(out, image));
    out.fill_(0.25);
    CHECK_FALSE(at::equal(out, image));  // not an alias of the input
  }
  // Only the axis that changes is resampled: rows stay exact when only the width changes.
  at::Tensor rows = at::rand({1, 1, 4, 1}).expand({1, 1, 4, 6}).contiguous();
  CHECK(at::allclose(resize_image(rows, 4, 3), rows.narrow(3, 0, 3), 0.0, 1e-6));
}

TEST_CASE("a constant image stays constant when down- or upscaled", "[image]") {
  at::Tensor image = at::full({1, 3, 17, 23}, 0.3);
  for (const char* f : {"lanczos", "bicubic", "bilinear", "hamming", "box", "nearest"}) {
    INFO(f);
    at::Tensor down = resize_image(image, 8, 8, f), up = resize_image(image, 40, 31, f);
    CHECK(down.sizes() == at::IntArrayRef({1, 3, 8, 8}));
    CHECK(up.sizes() == at::IntArrayRef({1, 3, 40, 31}));
    CHECK(at::allclose(down, at::full_like(down, 0.3), 0.0, 1e-6));
    CHECK(at::allclose(up, at::full_like(up, 0.3), 0.0, 1e-6));
  }
}

TEST_CASE("Lanczos downscale of a ramp matches the filter formula", "[image]") {
  // 10 → 4 (scale 2.5, so each output sees 15 taps, clipped at the borders).
  std::vector<double> ramp{0.0, 0.1, 0.15, 0.3, 0.45, 0.5, 0.6, 0.8, 0.9, 1.0};
  std::vector<double> expected = lanczos_downscale_1d(ramp, 4);
  at::Tensor out = resize_image(row_image(ramp), 1, 4, "lanczos");
  for (int i = 0; i < 4; ++i) {
    INFO("output " << i);
    CHECK(at2(out, 0, i) == Approx(std::clamp(expected[i], 0.0, 1.0)).margin(1e-6));
  }
  // A linear ramp far from the borders: a symmetric normalised filter reproduces the ramp at each output
  // pixel's centre, (2i + 1) - 0.5 input pixels for a 2x downscale.
  std::vector<double> linear;
  for (int x = 0; x < 32; ++x) linear.push_back(x / 31.0);
  at::Tensor half = resize_image(row_image(linear), 1, 16, "lanczos");
  for (int i = 3; i <= 12; ++i) {  // taps 2i-5 … 2i+6 all inside [0, 32)
    INFO("output " << i);
    CHECK(at2(half, 0, i) == Approx((2 * i + 0.5) / 31.0).margin(1e-6));
  }
  // The border output differs from the ramp (the clipped window is renormalised), as PIL's does.
  CHECK(at2(half, 0, 0) != Approx(0.5 / 31.0).margin(1e-4));
}

TEST_CASE("2x downscale of a checkerboard averages to 0.5 away from the borders", "[image]") {
  at::Tensor board = checkerboard(32);
  // Box at 2x: each output is the mean of its 2x2 block.
  CHECK(at::allclose(resize_image(board, 16, 16, "box"), at::full({1, 1, 16, 16}, 0.5), 0.0, 1e-6));
  // Lanczos: symmetric taps pair pixels of opposite colour inside the image.
  at::Tensor lz = resize_image(board, 16, 16, "lanczos");
  CHECK(at::allclose(lz.slice(2, 3, 13).slice(3, 3, 13), at::full({1, 1, 10, 10}, 0.5), 0.0, 1e-6));
  // Bilinear (a triangle of half-width 2 at this scale): taps at distances 0.5, 1.5 weigh 0.75, 0.25.
  // The first output sees pixels 0, 1, 2 only: 0, 1, 0 on even rows → 0.75 / 1.75 = 3/7, 1, 0, 1 on odd
  // rows → 1 / 1.75 = 4/7; the vertical pass then mixes rows 0, 1, 2 the same way.
  at::Tensor bl = resize_image(board, 16, 16, "bilinear");
  CHECK(at2(bl, 5, 0) == Approx(0.5).margin(1e-6));  // interior row: the rows' 3/7 and 4/7 average out
  CHECK(at2(bl, 0, 5) == Approx(0.5).margin(1e-6));
  CHECK(at2(bl, 0, 0) == Approx((0.75 * 3 / 7.0 + 0.75 * 4 / 7.0 + 0.25 * 3 / 7.0) / 1.75).margin(1e-6));
}

TEST_CASE("nearest picks the source pixel under each output centre", "[image]") {
  at::Tensor row = row_image({0.0, 0.25, 0.5, 1.0});
  at::Tensor down = resize_image(row, 1, 2, "nearest");  // floor((i + 0.5) * 2) = 1, 3
  CHECK(at2(down, 0, 0) == 0.25);
  CHECK(at2(down, 0, 1) == 1.0);
  at::Tensor up = resize_image(row_image({0.0, 1.0}), 1, 5, "nearest");  // floor((i + 0.5) * 0.4)
  std::vector<double> got;
  for (int i = 0; i < 5; ++i) got.push_back(at2(up, 0, i));
  CHECK(got == std::vector<double>{0, 0, 1, 1, 1});
}

TEST_CASE("resize_image rejects bad input clearly", "[image]") {
  at::Tensor image = at::rand({1, 3, 8, 8});
  CHECK_THROWS_WITH(resize_image(image, 4, 4, "cubic"), Contains("unknown resample filter 'cubic'"));
  CHECK_THROWS_WITH(resize_image(at::rand({3, 8, 8}), 4, 4), Contains("[B, C, H, W]"));
  CHECK_THROWS_WITH(resize_image(image, 0, 4), Contains("positive"));
  CHECK_THROWS_WITH(resize_image(image * 2 - 1, 4, 4), Contains("[0, 1]"));
  CHECK_THROWS_WITH(resize_image(at::ones({1, 3, 8, 8}, at::kByte), 4, 4), Contains("floating-point"));
  CHECK_THROWS_AS(resize_image(at::Tensor(), 4, 4), InputError);
}

TEST_CASE("preprocess_image resizes and maps [0, 1] to [-1, 1]", "[image]") {
  at::Tensor image = at::cat({at::zeros({1, 1, 16, 24}), at::full({1, 1, 16, 24}, 0.25), at::ones({1, 1, 16, 24})}, 1);
  at::Tensor x = preprocess_image(image, 8, 16);
  REQUIRE(x.sizes() == at::IntArrayRef({1, 3, 8, 16}));
  CHECK(x.scalar_type() == at::kFloat);
  CHECK(at::allclose(x[0][0], at::full({8, 16}, -1.0), 0.0, 1e-6));
  CHECK(at::allclose(x[0][1], at::full({8, 16}, -0.5), 0.0, 1e-6));
  CHECK(at::allclose(x[0][2], at::full({8, 16}, 1.0), 0.0, 1e-6));
  // Same size: exactly 2x - 1.
  at::Tensor r = at::rand({2, 3, 8, 8});
  CHECK(at::allclose(preprocess_image(r, 8, 8), r * 2 - 1, 0.0, 1e-7));

  CHECK_THROWS_WITH(preprocess_image(image, 12, 16), Contains("multiples of the VAE scale factor 8"));
  CHECK_NOTHROW(preprocess_image(image, 12, 16, "lanczos", 4));
  CHECK_THROWS_WITH(preprocess_image(at::rand({1, 4, 8, 8}), 8, 8), Contains("[B, 3, H, W]"));
  CHECK_THROWS_WITH(preprocess_image(r * 2 - 1, 8, 8), Contains("[0, 1]"));
  CHECK_THROWS_AS(preprocess_image(image, -8, 16), InputError);
}

TEST_CASE("preprocess_mask: PIL gray weights, resize, binarise at 0.5", "[image]") {
  // Threshold on a single-channel mask at its own size.
  at::Tensor m = at::zeros({1, 1, 8, 8});
  std::vector<double> values{0.49, 0.4999, 0.5, 0.51, 0.0, 1.0, 0.75, 0.25};
  for (int x = 0; x < 8; ++x) m[0][0][0][x] = values[x];
  at::Tensor b = preprocess_mask(m, 8, 8);
  REQUIRE(b.sizes() == at::IntArrayRef({1, 1, 8, 8}));
  std::vector<double> got;
  for (int x = 0; x < 8; ++x) got.push_back(at2(b, 0, x));
  CHECK(got == std::vector<double>{0, 0, 1, 1, 0, 1, 1, 0});

  // RGB masks: L = 0.299 R + 0.587 G + 0.114 B. Pixels chosen around 0.5 to pin the weights down.
  struct Case { double r, g, bl; double expected; };
  std::vector<Case> cases{
      {1, 0, 0, 0},        // 0.299
      {0, 1, 0, 1},        // 0.587
      {0, 0, 1, 0},        // 0.114
      {1, 0.35, 0, 1},     // 0.50445 (equal weights would give 0.45)
      {1, 0.335, 0, 0},    // 0.495645
      {0, 0.7, 1, 1},      // 0.5249
      {0, 0.65, 1, 0},     // 0.49555
      {0.45, 0.45, 0.45, 0},  // gray stays gray: the weights sum to 1
      {0.55, 0.55, 0.55, 1},
  };
  at::Tensor rgb = at::zeros({1, 3, 8, 16});
  for (size_t i = 0; i < cases.size(); ++i) {
    rgb[0][0][0][int64_t(i)] = cases[i].r, rgb[0][1][0][int64_t(i)] = cases[i].g, rgb[0][2][0][int64_t(i)] = cases[i].bl;
  }
  REQUIRE(cases.size() <= 16);
  at::Tensor g = preprocess_mask(rgb, 8, 16);
  REQUIRE(g.sizes() == at::IntArrayRef({1, 1, 8, 16}));
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    CHECK(at2(g, 0, int64_t(i)) == cases[i].expected);
  }

  // Downscaled: left half black, right half white → only 0 and 1, split in the middle.
  at::Tensor half = at::cat({at::zeros({1, 16, 16}), at::ones({1, 16, 16})}, 2);  // [B, H, W]
  at::Tensor d = preprocess_mask(half, 8, 16);
  REQUIRE(d.sizes() == at::IntArrayRef({1, 1, 8, 16}));
  CHECK(at::equal(d.narrow(3, 0, 8), at::zeros({1, 1, 8, 8})));
  CHECK(at::equal(d.narrow(3, 8, 8), at::ones({1, 1, 8, 8})));

  CHECK_THROWS_WITH(preprocess_mask(at::rand({1, 2, 8, 8}), 8, 8), Contains("mask"));
  CHECK_THROWS_WITH(preprocess_mask(m, 8, 12), Contains("multiples"));
  CHECK_THROWS_WITH(preprocess_mask(m * 3, 8, 8), Contains("[0, 1]"));
}

TEST_CASE("postprocess_image maps [-1, 1] to [0, 1] and clamps", "[image]") {
  at::Tensor x = at::tensor({-1.0, 0.0, 1.0, 3.0, -3.0, 0.5}, at::kDouble);
  at::Tensor y = postprocess_image(x);
  CHECK(y.scalar_type() == at::kFloat);
  CHECK(at::allclose(y, at::tensor({0.0, 0.5, 1.0, 1.0, 0.0, 0.75}, at::kFloat)));
  CHECK_THROWS_AS(postprocess_image(at::ones({2}, at::kLong)), InputError);
}
