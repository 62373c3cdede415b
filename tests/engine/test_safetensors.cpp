// Tests for engine/safetensors: round trips per dtype, the reference byte layout, atomic writes, and every
// malformed-header case the reader must reject cleanly (files crafted byte by byte here).
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tessera/error.h"
#include "engine/safetensors.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

/// A fresh temp directory, removed at scope end.
struct TempDir {
  fs::path dir;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera-st-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

/// A safetensors file from a header text and data bytes (length field = header size unless overridden).
std::string craft(const std::string& header, const std::string& data, int64_t length = -1) {
  return u64le(length < 0 ? header.size() : static_cast<uint64_t>(length)) + header + data;
}

/// Expects opening `bytes` as a file to fail with ModelLoadError mentioning the file and every `needle`.
void expect_rejected(const TempDir& tmp, const std::string& bytes, std::vector<std::string> needles) {
  const std::string path = tmp.file("bad.safetensors");
  write_bytes(path, bytes);
  try {
    SafetensorsFile f(path);
    FAIL("expected ModelLoadError for " + needles.front());
  } catch (const ModelLoadError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(path) != std::string::npos);
    for (const auto& n : needles) CHECK(what.find(n) != std::string::npos);
  }
}

bool dir_has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("safetensors round-trips every dtype bit for bit", "[engine][safetensors]") {
  TempDir tmp;
  at::manual_seed(0);
  std::map<std::string, at::Tensor> in;
  in["f64"] = at::randn({3, 2}, at::kDouble);
  in["f32"] = at::randn({2, 3, 4});
  in["f16"] = at::randn({5}).to(at::kHalf);
  in["bf16"] = at::randn({2, 2}).to(at::kBFloat16);
  in["i64"] = at::randint(-1000000, 1000000, {4}, at::kLong);
  in["i32"] = at::randint(-1000, 1000, {2, 2}, at::kInt);
  in["i16"] = at::randint(-300, 300, {3}, at::kShort);
  in["i8"] = at::randint(-128, 127, {7}, at::kChar);
  in["u8"] = at::randint(0, 255, {9}, at::kByte);
  in["bool"] = at::randint(0, 2, {3}, at::kLong).to(at::kBool);
  in["scalar"] = at::tensor(2.5);
  in["empty"] = at::empty({0, 3});
  in["strided"] = at::arange(12, at::kFloat).reshape({3, 4}).t();  // non-contiguous on purpose
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode ✓"}};
  const std::string path = tmp.file("all.safetensors");
  save_safetensors(path, in, meta);

  SafetensorsFile f(path);
  CHECK(f.metadata() == meta);
  CHECK(f.names().size() == in.size());
  for (const auto& [name, t] : in) {
    INFO(name);
    REQUIRE(f.has(name));
    at::Tensor got = f.tensor(name);
    CHECK(got.scalar_type() == t.scalar_type());
    CHECK(got.sizes() == t.sizes());
    CHECK(got.is_contiguous());
    CHECK(got.device().is_cpu());
    CHECK(at::equal(got, t));
  }
  CHECK_FALSE(f.has("nope"));
}

TEST_CASE("safetensors writes the reference byte layout", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("ref.safetensors");
  // Sorted by dtype (I64 before F32 before U8), then name, as the reference writer does.
  save_safetensors(path, {{"b", at::tensor({1.0f, 2.0f})}, {"a", at::tensor({7}, at::kLong)},
                          {"c", at::tensor({3}, at::kByte)}});
  const std::string header =
      R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("c":{"dtype":"U8","shape":[1],"data_offsets":[16,17]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() == 8 + padded.size() + 17);
  CHECK(bytes.substr(0, 8) == u64le(padded.size()));
  CHECK(bytes.substr(8, padded.size()) == padded);
  CHECK((8 + padded.size()) % 8 == 0);

  save_safetensors(path, {{"x", at::zeros({1})}}, {{"format", "pt"}});
  const std::string with_meta = read_bytes(path);
  const std::string meta_start = R"({"__metadata__":{"format":"pt"},)";
  CHECK(with_meta.substr(8, meta_start.size()) == meta_start);
}

TEST_CASE("safetensors tensors are copy-on-write views that outlive the file object", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("cow.safetensors");
  save_safetensors(path, {{"x", at::arange(4, at::kFloat)}});
  const std::string before = read_bytes(path);
  at::Tensor t;
  {
    SafetensorsFile f(path);
    t = f.tensor("x");
  }
  t.add_(10);  // writing into the view must neither crash nor change the file
  CHECK(at::equal(t, at::arange(4, at::kFloat) + 10));
  CHECK(read_bytes(path) == before);
  CHECK(at::equal(SafetensorsFile(path).tensor("x"), at::arange(4, at::kFloat)));
}

TEST_CASE("safetensors release drops a converted tensor's pages; reading it again gives the file's values",
          "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("release.safetensors");
  // Several pages per tensor, neighbours on both sides so that partial boundary pages are exercised.
  const at::Tensor a = at::arange(5000, at::kFloat), b = at::arange(20000, at::kHalf), c = at::arange(3000, at::kFloat);
  save_safetensors(path, {{"a", a}, {"b", b}, {"c", c}});
  SafetensorsFile f(path);
  at::Tensor converted = f.tensor("b").to(at::kFloat);
  f.release("b");
  f.release("b");  // idempotent
  CHECK(at::equal(converted, b.to(at::kFloat)));
  CHECK(at::equal(f.tensor("b"), b));  // pages read back from the file
  CHECK(at::equal(f.tensor("a"), a));  // neighbours untouched
  CHECK(at::equal(f.tensor("c"), c));
  CHECK_THROWS_AS(f.release("nope"), ModelLoadError);
}

TEST_CASE("safetensors reads misaligned data by copying it", "[engine][safetensors]") {
  TempDir tmp;
  std::string header = R"({"p":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float vals[2] = {1.5f, -2.25f};
  std::string data(1, '\x07');
  data.append(reinterpret_cast<const char*>(vals), sizeof vals);
  const std::string path = tmp.file("mis.safetensors");
  write_bytes(path, craft(header, data));
  SafetensorsFile f(path);
  CHECK(at::equal(f.tensor("x"), at::tensor({1.5f, -2.25f})));
  CHECK(f.tensor("p").item<uint8_t>() == 7);
  CHECK(f.entry("x").begin == 1);
}

TEST_CASE("safetensors rejects malformed files with a clear error", "[engine][safetensors]") {
  TempDir tmp;
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\0');

  SECTION("missing file") {
    CHECK_THROWS_AS(SafetensorsFile(tmp.file("none.safetensors")), ModelLoadError);
  }
  SECTION("shorter than the length field") { expect_rejected(tmp, "abc", {"truncated"}); }
  SECTION("header length beyond the file") {
    expect_rejected(tmp, craft(R"({"x":)" + ok_entry + "}", data8, 5000), {"truncated", "5000"});
  }
  SECTION("absurd header length") { expect_rejected(tmp, craft("{}", "", int64_t(1) << 40), {"absurd"}); }
  SECTION("invalid JSON") { expect_rejected(tmp, craft(R"({"x": {"dtype": )", data8), {"not valid JSON"}); }
  SECTION("not UTF-8") { expect_rejected(tmp, craft("{\"\xff\xfe\":" + ok_entry + "}", data8), {"UTF-8"}); }
  SECTION("overlong UTF-8") { expect_rejected(tmp, craft("{\"\xc0\xaf\":" + ok_entry + "}", data8), {"UTF-8"}); }
  SECTION("header is not an object") { expect_rejected(tmp, craft("[1, 2]", ""), {"object"}); }
  SECTION("duplicate key") {
    expect_rejected(tmp, craft(R"({"x":)" + ok_entry + R"(,"x":)" + ok_entry + "}", data8), {"'x' twice"});
  }
  SECTION("unknown dtype") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", data8),
                    {"'w'", "C64"});
  }
  SECTION("negative shape") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8),
                    {"'w'", "shape"});
  }
  SECTION("non-integer shape") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", data8),
                    {"'w'", "shape"});
  }
  SECTION("shape is not an array") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", data8), {"'w'"});
  }
  SECTION("missing data_offsets") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[2]}})", data8), {"'w'", "data_offsets"});
  }
  SECTION("offsets past the end") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", data8),
                    {"'w'", "past the end"});
  }
  SECTION("end before begin") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data8 + data8),
                    {"'w'", "end before"});
  }
  SECTION("negative offsets") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data8), {"'w'"});
  }
  SECTION("byte size does not match the shape") {
    expect_rejected(tmp, craft(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8),
                    {"'w'", "needs 12 bytes"});
  }
  SECTION("shape whose size overflows") {
    expect_rejected(
        tmp,
        craft(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})",
              data8),
        {"'w'", "2^64"});
  }
  SECTION("overlapping ranges") {
    expect_rejected(tmp,
                    craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          data8 + data8),
                    {"'b'", "overlap", "'a'"});
  }
  SECTION("metadata that is not strings") {
    expect_rejected(tmp, craft(R"({"__metadata__":{"n":3}})", ""), {"__metadata__", "'n'"});
  }
  SECTION("bool bytes other than 0 and 1") {
    const std::string path = tmp.file("bool.safetensors");
    write_bytes(path, craft(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x05", 2)));
    SafetensorsFile f(path);
    CHECK_THROWS_WITH(f.tensor("m"), Catch::Contains("'m'") && Catch::Contains("not 0 or 1"));
  }
  SECTION("asking for a tensor the file lacks suggests a name") {
    const std::string path = tmp.file("one.safetensors");
    save_safetensors(path, {{"latents", at::zeros({2})}});
    SafetensorsFile f(path);
    CHECK_THROWS_AS(f.tensor("latent"), ModelLoadError);
    CHECK_THROWS_WITH(f.tensor("latent"), Catch::Contains("'latent'") && Catch::Contains("latents"));
  }
}

TEST_CASE("safetensors accepts empty and zero-size tensors", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("z.safetensors");
  write_bytes(path, craft(R"({"e":{"dtype":"I8","shape":[0,5],"data_offsets":[0,0]}})", ""));
  SafetensorsFile f(path);
  CHECK(f.tensor("e").sizes() == at::IntArrayRef({0, 5}));
  save_safetensors(path, {});
  CHECK(SafetensorsFile(path).names().empty());
}

TEST_CASE("save_safetensors is atomic and reports OutputError", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("keep.safetensors");
  save_safetensors(path, {{"x", at::ones({2})}});
  const std::string before = read_bytes(path);

  SECTION("unsupported dtype leaves the old file untouched") {
    CHECK_THROWS_AS(save_safetensors(path, {{"c", at::zeros({2}, at::kComplexFloat)}}), OutputError);
    CHECK(read_bytes(path) == before);
  }
  SECTION("undefined tensor and reserved name") {
    CHECK_THROWS_AS(save_safetensors(path, {{"u", at::Tensor()}}), OutputError);
    CHECK_THROWS_AS(save_safetensors(path, {{"__metadata__", at::ones({1})}}), OutputError);
    CHECK(read_bytes(path) == before);
  }
  SECTION("missing directory") {
    CHECK_THROWS_AS(save_safetensors(tmp.file("no/such/dir/x.safetensors"), {{"x", at::ones({1})}}), OutputError);
  }
  SECTION("an error in the middle of writing removes the temp file") {
    CHECK_THROWS_AS(write_file_atomically(path,
                                          [](const ByteSink& sink) {
                                            sink("partial", 7);
                                            throw OutputError("simulated failure");
                                          }),
                    OutputError);
    CHECK(read_bytes(path) == before);
  }
  CHECK_FALSE(dir_has_temp_files(tmp.dir));
}

TEST_CASE("safetensors survives mutated and truncated files", "[engine][safetensors]") {
  // Every mutation must either load or raise ModelLoadError: never crash, hang or allocate wildly.
  TempDir tmp;
  const std::string good_path = tmp.file("good.safetensors");
  save_safetensors(good_path, {{"a", at::arange(6, at::kFloat).reshape({2, 3})}, {"b", at::ones({4}, at::kBool)},
                               {"c", at::arange(3, at::kLong)}},
                   {{"k", "v"}});
  const std::string good = read_bytes(good_path);
  const std::string path = tmp.file("mut.safetensors");
  uint32_t rng = 12345;
  auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes = good;
    if (iter % 4 == 0) {
      bytes.resize(next() % good.size());
    } else {
      for (int k = 0; k < 1 + iter % 3; ++k) bytes[next() % bytes.size()] = static_cast<char>(next() & 0xFF);
    }
    write_bytes(path, bytes);
    try {
      SafetensorsFile f(path);
      for (const auto& n : f.names()) (void)f.tensor(n).sum();
      ++loaded;
    } catch (const ModelLoadError&) {
      ++rejected;
    }
  }
  CHECK(loaded + rejected == 400);
  CHECK(rejected > 0);

  // A deeply nested header must not overflow the stack.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  expect_rejected(tmp, craft(deep, ""), {"object"});
}
