// PNG output and input (include/tessera/image_io.h): quantisation, text chunks, atomic writes, every PNG colour
// type, and untrusted files. Test PNGs are assembled byte by byte below (stored deflate, CRC-32), so the
// reader is checked against files that Tessera's writer did not produce.
#include <stdlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "tessera/error.h"
#include "tessera/image_io.h"

using namespace tessera;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera-image-io-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// ---- a minimal PNG assembler (uncompressed deflate), for inputs of every colour type and depth

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

std::string zlib_stored(const std::string& raw) {
  std::string out = "\x78\x01";
  size_t pos = 0;
  do {
    size_t n = std::min<size_t>(raw.size() - pos, 65535);
    bool last = pos + n == raw.size();
    out += static_cast<char>(last ? 1 : 0);
    out += static_cast<char>(n & 0xFF);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(~n & 0xFF);
    out += static_cast<char>((~n >> 8) & 0xFF);
    out += raw.substr(pos, n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1, b = 0;
  for (unsigned char ch : raw) {
    a = (a + ch) % 65521;
    b = (b + a) % 65521;
  }
  return out + be32((b << 16) | a);
}

std::string chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

/// A PNG with `channels` samples per pixel at `depth` bits; `samples` row-major [h][w * channels].
struct RawPng {
  int width = 0, height = 0, depth = 8, color = 2;  // colour type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
  bool interlaced = false;
  std::vector<int> samples;
  std::string extra_before_idat;  // PLTE, tRNS, text chunks…
  std::string extra_after_idat;

  int channels() const { return color == 0 || color == 3 ? 1 : color == 2 ? 3 : color == 4 ? 2 : 4; }

  std::string scanline(int y, int x0, int dx) const {
    std::string row(1, '\0');  // filter type 0
    int acc = 0, bits = 0;
    for (int x = x0; x < width; x += dx)
      for (int c = 0; c < channels(); ++c) {
        int v = samples[(static_cast<size_t>(y) * width + x) * channels() + c];
        if (depth == 16) {
          row += static_cast<char>(v >> 8);
          row += static_cast<char>(v & 0xFF);
        } else {
          acc = (acc << depth) | v;
          bits += depth;
          if (bits == 8) row += static_cast<char>(acc), acc = 0, bits = 0;
        }
      }
    if (bits) row += static_cast<char>(acc << (8 - bits));
    return row;
  }

  std::string file() const {
    std::string raw;
    if (!interlaced) {
      for (int y = 0; y < height; ++y) raw += scanline(y, 0, 1);
    } else {  // Adam7: seven sub-images, each with its own scanlines
      const int pass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                              {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
      for (const auto& p : pass)
        if (p[0] < width)
          for (int y = p[1]; y < height; y += p[3]) raw += scanline(y, p[0], p[2]);
    }
    std::string ihdr = be32(width) + be32(height) + static_cast<char>(depth) + static_cast<char>(color) +
                       std::string(2, '\0') + static_cast<char>(interlaced ? 1 : 0);
    return "\x89PNG\r\n\x1a\n" + chunk("IHDR", ihdr) + extra_before_idat + chunk("IDAT", zlib_stored(raw)) +
           extra_after_idat + chunk("IEND", "");
  }
};

/// Expected pixels [1, 3, H, W] for a gray/RGB(A) RawPng: samples / (2^depth - 1), gray replicated, alpha dropped.
at::Tensor expected_rgb(const RawPng& p) {
  at::Tensor s = at::tensor(p.samples, at::kInt).view({p.height, p.width, p.channels()}).to(at::kFloat);
  s = s.div((1 << p.depth) - 1);
  at::Tensor rgb = p.color == 0 || p.color == 4 ? s.slice(2, 0, 1).expand({-1, -1, 3}) : s.slice(2, 0, 3);
  return rgb.permute({2, 0, 1}).unsqueeze(0).contiguous();  // [1, 3, H, W]
}

RawPng ramp(int w, int h, int depth, int color) {
  RawPng p;
  p.width = w, p.height = h, p.depth = depth, p.color = color;
  int max = (1 << depth) - 1;
  for (int i = 0; i < w * h * p.channels(); ++i) p.samples.push_back((i * 37 + 11) % (max + 1));
  return p;
}

}  // namespace

TEST_CASE("write_png then read_image round-trips after quantisation", "[engine][image]") {
  TempDir dir;
  at::Tensor x = at::rand({3, 17, 23}) * 1.4 - 0.2;  // some values outside [0, 1]
  x[0][0][0] = std::numeric_limits<float>::quiet_NaN();
  x[1][0][0] = 0.5f;  // 127.5 rounds half to even: 128
  write_png(dir / "a.png", x);
  ImageBatch back = read_image(dir / "a.png");
  REQUIRE(back.pixels.sizes() == at::IntArrayRef({1, 3, 17, 23}));
  CHECK(back.pixels.scalar_type() == at::kFloat);
  at::Tensor expected = at::nan_to_num(x, 0.0).clamp(0, 1).mul(255).round().div(255).unsqueeze(0);
  CHECK(at::equal(back.pixels, expected));
  CHECK(back.pixels[0][0][0][0].item<float>() == 0.0f);
  CHECK(back.pixels[0][1][0][0].item<float>() == 128.0f / 255.0f);
  CHECK(dir.entries() == std::vector<std::string>{"a.png"});

  // [1, 3, H, W] and other floating dtypes are accepted; the same bytes come out.
  write_png(dir / "b.png", x.unsqueeze(0).to(at::kDouble));
  CHECK(at::equal(read_image(dir / "b.png").pixels, expected));
}

TEST_CASE("write_png rejects what is not one RGB float image, naming the path", "[engine][image]") {
  TempDir dir;
  std::string path = dir / "bad.png";
  CHECK_THROWS_WITH(write_png(path, at::rand({2, 3, 4, 4})), Contains(path) && Contains("[2, 3, 4, 4]"));
  CHECK_THROWS_AS(write_png(path, at::rand({4, 4, 4})), OutputError);
  CHECK_THROWS_AS(write_png(path, at::zeros({3, 4, 4}, at::kByte)), OutputError);
  CHECK_THROWS_AS(write_png(path, at::Tensor()), OutputError);
  CHECK_THROWS_AS(write_png(path, at::rand({3, 0, 4})), OutputError);
  CHECK(dir.entries().empty());
}

TEST_CASE("text chunks: tEXt for ASCII, iTXt for UTF-8, read back in order", "[engine][image]") {
  TempDir dir;
  TextChunks chunks = {{"seed", "42"},
                       {"prompt", "a cat — ☕ 東京"},
                       {"recipe", "version: 1\nname: demo\nblocks: []\n"},
                       {"empty", ""},
                       {"Comment with spaces", "naïve café"}};
  write_png(dir / "t.png", at::rand({3, 4, 4}), chunks);
  CHECK(read_png_text(dir / "t.png") == chunks);
  std::string bytes = read_bytes(dir / "t.png");
  CHECK(bytes.find("tEXtseed") != std::string::npos);
  CHECK(bytes.find("iTXtprompt") != std::string::npos);
  CHECK(bytes.find("sRGB") != std::string::npos);

  SECTION("bad keywords and values are OutputErrors and leave no file") {
    for (const auto& bad : std::vector<TextChunks>{{{"", "x"}},
                                                   {{std::string(80, 'k'), "x"}},
                                                   {{" lead", "x"}},
                                                   {{"two  spaces", "x"}},
                                                   {{"caf\xc3\xa9", "x"}},
                                                   {{"nul", std::string("a\0b", 3)}},
                                                   {{"latin1", "caf\xe9"}}}) {
      INFO(bad[0].first);
      CHECK_THROWS_AS(write_png(dir / "u.png", at::rand({3, 2, 2}), bad), OutputError);
    }
    CHECK(dir.entries() == std::vector<std::string>{"t.png"});
  }
}

TEST_CASE("writes are atomic: a failure leaves no file and does not clobber one", "[engine][image]") {
  TempDir dir;
  SECTION("a missing directory") {
    std::string path = dir / "no/such/dir/out.png";
    CHECK_THROWS_WITH(write_png(path, at::rand({3, 4, 4})), Contains(path) && Contains("does not exist"));
    CHECK(dir.entries().empty());
  }
  SECTION("an existing file survives a failed write") {
    std::string path = dir / "keep.png";
    write_png(path, at::zeros({3, 4, 4}), {{"v", "1"}});
    std::string before = read_bytes(path);
    CHECK_THROWS_AS(write_png(path, at::rand({5, 4, 4})), OutputError);
    CHECK_THROWS_AS(write_png(path, at::rand({3, 4, 4}), {{"", "bad key"}}), OutputError);
    CHECK(read_bytes(path) == before);
    CHECK(dir.entries() == std::vector<std::string>{"keep.png"});
    // A successful write replaces it.
    write_png(path, at::ones({3, 4, 4}), {{"v", "2"}});
    CHECK(read_png_text(path) == TextChunks{{"v", "2"}});
  }
  SECTION("a failure after encoding (target is a directory) removes the temporary file") {
    fs::create_directory(dir.path / "taken.png");
    CHECK_THROWS_WITH(write_png(dir / "taken.png", at::rand({3, 4, 4})), Contains("taken.png"));
    CHECK(dir.entries() == std::vector<std::string>{"taken.png"});
    CHECK(fs::is_directory(dir.path / "taken.png"));
  }
}

TEST_CASE("write_pngs names a batch base.png or base-<i>.png", "[engine][image]") {
  TempDir dir;
  at::Tensor one = at::rand({1, 3, 4, 4});
  CHECK(write_pngs(dir / "single.png", one) == std::vector<std::string>{dir / "single.png"});
  at::Tensor three = at::rand({3, 3, 4, 5});
  auto paths = write_pngs(dir / "batch", three, {{"seed", "7"}});
  REQUIRE(paths == std::vector<std::string>{dir / "batch-0.png", dir / "batch-1.png", dir / "batch-2.png"});
  for (int64_t i = 0; i < 3; ++i) {
    CHECK(at::equal(read_image(paths[i]).pixels[0], three[i].mul(255).round().div(255)));
    CHECK(read_png_text(paths[i]) == TextChunks{{"seed", "7"}});
  }
  CHECK(png_batch_paths("x", 12).front() == "x-00.png");
  CHECK(png_batch_paths("x", 12).back() == "x-11.png");
  // A bad batch writes nothing.
  CHECK_THROWS_AS(write_pngs(dir / "none", at::rand({2, 4, 4, 4})), OutputError);
  CHECK_THROWS_AS(write_pngs(dir / "none", at::rand({2, 3, 4, 4}), {{"bad  key", ""}}), OutputError);
  CHECK(dir.entries().size() == 4);
}

TEST_CASE("read_image converts every PNG colour type and depth to RGB", "[engine][image]") {
  TempDir dir;
  auto read_raw = [&](const RawPng& p) {
    write_bytes(dir / "in.png", p.file());
    return read_image(dir / "in.png").pixels;
  };
  for (auto [depth, color] : std::vector<std::pair<int, int>>{
           {8, 2}, {16, 2}, {8, 6}, {16, 6}, {1, 0}, {2, 0}, {4, 0}, {8, 0}, {16, 0}, {8, 4}, {16, 4}}) {
    for (bool interlaced : {false, true}) {
      INFO("depth " << depth << ", colour type " << color << (interlaced ? ", interlaced" : ""));
      RawPng p = ramp(11, 7, depth, color);
      p.interlaced = interlaced;
      at::Tensor got = read_raw(p);
      REQUIRE(got.sizes() == at::IntArrayRef({1, 3, 7, 11}));
      CHECK(at::allclose(got, expected_rgb(p), 0, 1e-6));
    }
  }
  SECTION("palette, with tRNS transparency dropped") {
    RawPng p = ramp(5, 3, 4, 3);  // indices 0..15
    std::string plte;
    for (int i = 0; i < 16; ++i) plte += std::string{char(i * 16), char(255 - i), char(i * 3)};
    p.extra_before_idat = chunk("PLTE", plte) + chunk("tRNS", std::string(16, '\x80'));
    at::Tensor got = read_raw(p);
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 5; ++x) {
        int i = p.samples[y * 5 + x];
        CHECK(got[0][0][y][x].item<float>() == Approx(((i * 16) & 255) / 255.0));
        CHECK(got[0][1][y][x].item<float>() == Approx((255 - i) / 255.0));
        CHECK(got[0][2][y][x].item<float>() == Approx(i * 3 / 255.0));
      }
  }
}

TEST_CASE("read_png_text finds tEXt, zTXt and iTXt before and after the image data", "[engine][image]") {
  TempDir dir;
  RawPng p = ramp(9, 5, 8, 2);
  p.interlaced = GENERATE(false, true);
  p.extra_before_idat = chunk("tEXt", std::string("Title\0caf\xe9", 10));  // Latin-1
  p.extra_after_idat = chunk("zTXt", std::string("Notes\0\0", 7) + zlib_stored("compressed")) +
                       chunk("iTXt", std::string("Prompt\0\0\0\0\0", 11) + "東京");
  write_bytes(dir / "t.png", p.file());
  CHECK(read_png_text(dir / "t.png") == TextChunks{{"Title", "café"}, {"Notes", "compressed"}, {"Prompt", "東京"}});
}

TEST_CASE("read_image rejects missing, foreign, corrupt and oversized files, naming them", "[engine][image]") {
  TempDir dir;
  auto fails = [](const std::string& path, const std::string& why) {
    INFO(path << ": " << why);
    CHECK_THROWS_AS(read_image(path), InputError);
    CHECK_THROWS_WITH(read_image(path), Contains(path) && Contains(why));
    CHECK_THROWS_AS(read_png_text(path), InputError);
  };
  fails(dir / "missing.png", "No such file");
  fs::create_directory(dir.path / "a_dir.png");
  fails(dir / "a_dir.png", "not a regular file");
  write_bytes(dir / "empty.png", "");
  fails(dir / "empty.png", "only PNG");
  write_bytes(dir / "photo.jpg", "\xFF\xD8\xFF\xE0\x00\x10JFIF\x00 and more");
  fails(dir / "photo.jpg", "JPEG");
  write_bytes(dir / "text.png", "just some text, not an image");
  fails(dir / "text.png", "not a PNG");

  std::string good = ramp(32, 32, 8, 2).file();
  write_bytes(dir / "truncated.png", good.substr(0, good.size() / 2));
  fails(dir / "truncated.png", "corrupt or truncated");
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x55;  // inside IDAT: its CRC no longer matches
  write_bytes(dir / "flipped.png", flipped);
  fails(dir / "flipped.png", "corrupt or truncated");
  std::string bad_crc = good;
  bad_crc[16 + 8] ^= 1;  // the bit depth byte of IHDR
  write_bytes(dir / "crc.png", bad_crc);
  fails(dir / "crc.png", "CRC");
  RawPng bad_depth = ramp(1, 1, 8, 0);
  bad_depth.depth = 7;  // a well-formed chunk with an invalid value
  write_bytes(dir / "depth.png", bad_depth.file());
  fails(dir / "depth.png", "corrupt or truncated");

  RawPng huge;
  huge.width = 20000, huge.height = 1, huge.color = 0;  // header only matters: rejected before any decoding
  huge.samples.assign(20000, 0);
  write_bytes(dir / "huge.png", huge.file());
  fails(dir / "huge.png", "16384");
}
