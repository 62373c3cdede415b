// JPEG input (include/tessera/image_io.h read_image): baseline and progressive, grayscale and CMYK conversion to
// RGB as PIL's convert("RGB"), and untrusted files. Test JPEGs are encoded here with libjpeg's compressor
// into a temporary directory (no binary fixtures).
#include <stdlib.h>

// jpeglib.h needs FILE and size_t declared first.
#include <cstdio>
#include <jpeglib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "tessera/error.h"
#include "tessera/image_io.h"

using namespace tessera;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera-jpeg-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

/// Encodes `samples` ([H, W, components] uint8, row-major) with libjpeg.
void write_jpeg(const std::string& path, int width, int height, int components, J_COLOR_SPACE space,
                const std::vector<uint8_t>& samples, int quality, bool progressive) {
  REQUIRE(samples.size() == size_t(width) * height * components);
  FILE* fp = std::fopen(path.c_str(), "wb");
  REQUIRE(fp);
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, fp);
  cinfo.image_width = JDIMENSION(width);
  cinfo.image_height = JDIMENSION(height);
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);  // RGB → YCbCr, CMYK → CMYK (with an Adobe marker), gray → gray
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    auto* row = const_cast<JSAMPROW>(samples.data() + size_t(cinfo.next_scanline) * width * components);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(fp);
}

/// A smooth RGB image: horizontal, vertical and diagonal ramps in the three channels. [H, W, 3] uint8.
std::vector<uint8_t> smooth_rgb(int width, int height) {
  std::vector<uint8_t> out;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      out.push_back(uint8_t(255 * x / (width - 1)));
      out.push_back(uint8_t(255 * y / (height - 1)));
      out.push_back(uint8_t(255 * (x + y) / (width + height - 2)));
    }
  return out;
}

/// The same samples as read_image's layout: [1, C, H, W] float in [0, 1].
at::Tensor as_pixels(const std::vector<uint8_t>& samples, int width, int height, int components) {
  at::Tensor t = at::tensor(std::vector<int64_t>(samples.begin(), samples.end()), at::kLong);
  return t.view({height, width, components}).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255.0);
}

bool contains_marker(const std::string& bytes, unsigned char marker) {
  return bytes.find(std::string{'\xFF', static_cast<char>(marker)}) != std::string::npos;
}

}  // namespace

TEST_CASE("read_image decodes a baseline JPEG within JPEG's error", "[engine][image][jpeg]") {
  TempDir dir;
  const int w = 64, h = 48;
  std::vector<uint8_t> src = smooth_rgb(w, h);
  write_jpeg(dir / "baseline.jpg", w, h, 3, JCS_RGB, src, 95, false);
  REQUIRE(contains_marker(read_bytes(dir / "baseline.jpg"), 0xC0));  // SOF0: baseline

  at::Tensor px = read_image(dir / "baseline.jpg").pixels;
  REQUIRE(px.sizes() == at::IntArrayRef({1, 3, h, w}));
  CHECK(px.scalar_type() == at::kFloat);
  CHECK(px.min().item<float>() >= 0.0f);
  CHECK(px.max().item<float>() <= 1.0f);
  at::Tensor diff = (px - as_pixels(src, w, h, 3)).abs();
  // Quality 95 with 4:2:0 chroma subsampling on smooth ramps: a few 8-bit steps at most.
  CHECK(diff.mean().item<float>() < 2.0f / 255);
  CHECK(diff.max().item<float>() < 12.0f / 255);
}

TEST_CASE("read_image decodes a progressive JPEG like its baseline twin", "[engine][image][jpeg]") {
  TempDir dir;
  const int w = 40, h = 33;  // not multiples of the 16-pixel MCU
  std::vector<uint8_t> src = smooth_rgb(w, h);
  write_jpeg(dir / "base.jpg", w, h, 3, JCS_RGB, src, 90, false);
  write_jpeg(dir / "prog.jpg", w, h, 3, JCS_RGB, src, 90, true);
  REQUIRE(contains_marker(read_bytes(dir / "prog.jpg"), 0xC2));  // SOF2: progressive

  at::Tensor prog = read_image(dir / "prog.jpg").pixels;
  REQUIRE(prog.sizes() == at::IntArrayRef({1, 3, h, w}));
  // Same quantised coefficients, only sent in several scans: the decoded pixels are the same.
  CHECK(at::allclose(prog, read_image(dir / "base.jpg").pixels, 0.0, 1.5 / 255));
  CHECK((prog - as_pixels(src, w, h, 3)).abs().mean().item<float>() < 3.0f / 255);
}

TEST_CASE("a grayscale JPEG is replicated to RGB", "[engine][image][jpeg]") {
  TempDir dir;
  const int w = 24, h = 16;
  std::vector<uint8_t> gray;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) gray.push_back(uint8_t(10 * x + y));
  write_jpeg(dir / "gray.jpg", w, h, 1, JCS_GRAYSCALE, gray, 100, false);

  at::Tensor px = read_image(dir / "gray.jpg").pixels;
  REQUIRE(px.sizes() == at::IntArrayRef({1, 3, h, w}));
  CHECK(at::equal(px[0][0], px[0][1]));
  CHECK(at::equal(px[0][0], px[0][2]));
  CHECK((px[0][0] - as_pixels(gray, w, h, 1)[0][0]).abs().max().item<float>() <= 2.0f / 255);
}

TEST_CASE("a CMYK JPEG is converted as PIL does (Adobe-inverted, R = C * K stored)", "[engine][image][jpeg]") {
  TempDir dir;
  const int w = 16, h = 16;  // flat colour: quality 100 keeps the stored values within one step
  const uint8_t c = 200, m = 100, y = 50, k = 128;  // as stored in the file
  std::vector<uint8_t> cmyk;
  for (int i = 0; i < w * h; ++i) cmyk.insert(cmyk.end(), {c, m, y, k});
  write_jpeg(dir / "cmyk.jpg", w, h, 4, JCS_CMYK, cmyk, 100, false);

  at::Tensor px = read_image(dir / "cmyk.jpg").pixels;
  REQUIRE(px.sizes() == at::IntArrayRef({1, 3, h, w}));
  // PIL reads stored CMYK as inverted (255 - v), then R = (255 - K') - C' (255 - K') / 255, which with
  // C' = 255 - C, K' = 255 - K is C * K / 255.
  const double kf = k / 255.0;
  CHECK(px[0][0].mean().item<double>() == Approx(c / 255.0 * kf).margin(2.0 / 255));
  CHECK(px[0][1].mean().item<double>() == Approx(m / 255.0 * kf).margin(2.0 / 255));
  CHECK(px[0][2].mean().item<double>() == Approx(y / 255.0 * kf).margin(2.0 / 255));
}

TEST_CASE("read_image rejects corrupt, truncated, oversized and exotic JPEGs, naming them", "[engine][image][jpeg]") {
  TempDir dir;
  const int w = 32, h = 32;
  write_jpeg(dir / "good.jpg", w, h, 3, JCS_RGB, smooth_rgb(w, h), 90, false);
  const std::string good = read_bytes(dir / "good.jpg");
  auto fails = [](const std::string& path, const std::string& why) {
    INFO(path << ": " << why);
    CHECK_THROWS_AS(read_image(path), InputError);
    CHECK_THROWS_WITH(read_image(path), Contains(path) && Contains(why));
  };

  write_bytes(dir / "truncated.jpg", good.substr(0, good.size() / 2));
  fails(dir / "truncated.jpg", "corrupt, truncated or unsupported JPEG (Premature end of JPEG file)");
  write_bytes(dir / "header_only.jpg", good.substr(0, 20));
  fails(dir / "header_only.jpg", "corrupt, truncated or unsupported JPEG");

  const size_t sos = good.find("\xFF\xDA");
  REQUIRE(sos != std::string::npos);
  std::string ended = good;  // an end-of-image marker in the middle of the scan data
  ended.replace(sos + (good.size() - sos) / 2, 2, "\xFF\xD9");
  write_bytes(dir / "ended.jpg", ended);
  fails(dir / "ended.jpg", "corrupt, truncated or unsupported JPEG");

  const size_t sof = good.find("\xFF\xC0");
  REQUIRE(sof != std::string::npos);
  std::string precision = good;  // SOF0: FF C0, length (2), precision (1), height (2), width (2)
  precision[sof + 4] = 12;
  write_bytes(dir / "precision.jpg", precision);
  fails(dir / "precision.jpg", "Unsupported JPEG data precision 12");

  std::string huge = good;
  huge[sof + 7] = static_cast<char>(20000 >> 8), huge[sof + 8] = static_cast<char>(20000 & 0xFF);
  write_bytes(dir / "huge.jpg", huge);
  fails(dir / "huge.jpg", "larger than the supported");

  std::vector<uint8_t> two(size_t(8) * 8 * 2, 100);
  write_jpeg(dir / "two.jpg", 8, 8, 2, JCS_UNKNOWN, two, 90, false);
  fails(dir / "two.jpg", "unsupported JPEG colour space");

  // The PNG-only reader still names a JPEG as such.
  CHECK_THROWS_WITH(read_png_text(dir / "good.jpg"), Contains("a JPEG file, not a PNG"));
  // Neither PNG nor JPEG: both formats are named in the message.
  write_bytes(dir / "anim.gif", "GIF89a and more");
  fails(dir / "anim.gif", "only PNG and JPEG images are supported");
}
