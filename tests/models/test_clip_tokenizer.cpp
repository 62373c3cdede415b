// CLIPTokenizer: exact match with transformers' slow tokenizer on the parity goldens, bad files, untrusted text.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/loading/diffusers_folder.h"
#include "models/text/clip_tokenizer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kParity = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";

nlohmann::json manifest_case(const std::string& name) {
  const nlohmann::json m = read_json_file(kParity + "/manifest.json");  // has Python's -Infinity literals
  for (const auto& c : m["cases"])
    if (c["name"] == name) return c;
  FAIL("case " << name << " not in manifest");
  return {};
}

std::vector<std::string> prompts_of(const nlohmann::json& c) {
  return c["params"]["prompts"].get<std::vector<std::string>>();
}

void check_rows(const at::Tensor& got, const at::Tensor& expected, const std::vector<std::string>& prompts,
                const std::string& what) {
  REQUIRE(got.sizes() == expected.sizes());
  for (int64_t i = 0; i < got.size(0); ++i) {
    INFO(what << " row " << i << " prompt '" << prompts[i] << "'\n got " << got[i] << "\n exp " << expected[i]);
    CHECK(at::equal(got[i], expected[i]));
  }
}

/// A scratch copy of a tokenizer folder that a test may break.
struct TempTokenizer {
  fs::path dir;
  explicit TempTokenizer(const std::string& src) {
    dir = fs::temp_directory_path() / ("tessera_tok_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dir / e.path().filename());
  }
  ~TempTokenizer() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << text;
  }
};

}  // namespace

TEST_CASE("CLIPTokenizer matches transformers on tiny_sd_tokenizer", "[model][parity][tokenizer]") {
  const auto c = manifest_case("tiny_sd_tokenizer");
  const auto prompts = prompts_of(c);
  auto tok = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sd/tokenizer");
  CHECK(tok->type() == "CLIPTokenizer");
  CHECK(tok->model_max_length() == 77);
  CHECK(tok->bos_token_id() == 998);
  CHECK(tok->eos_token_id() == 999);
  CHECK(tok->pad_token_id() == 999);
  SafetensorsFile f(kParity + "/cases/tiny_sd_tokenizer.safetensors");
  const CLIPTokenizerOutput out = (*tok)(prompts);
  CHECK(out.input_ids.scalar_type() == at::kLong);
  check_rows(out.input_ids, f.tensor("input_ids"), prompts, "input_ids");
  check_rows(out.attention_mask, f.tensor("attention_mask"), prompts, "attention_mask");
  const auto lengths = c["params"]["untruncated_lengths"].get<std::vector<size_t>>();
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(tok->untruncated_length(prompts[i]) == lengths[i]);
}

TEST_CASE("CLIPTokenizer matches transformers on tiny_sdxl_tokenizers (second pads with '!')",
          "[model][parity][tokenizer]") {
  const auto c = manifest_case("tiny_sdxl_tokenizers");
  const auto prompts = prompts_of(c);
  auto tok1 = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sdxl/tokenizer");
  auto tok2 = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sdxl/tokenizer_2");
  CHECK(tok2->pad_token_id() == 0);
  SafetensorsFile f(kParity + "/cases/tiny_sdxl_tokenizers.safetensors");
  const CLIPTokenizerOutput out1 = (*tok1)(prompts);
  const CLIPTokenizerOutput out2 = (*tok2)(prompts);
  check_rows(out1.input_ids, f.tensor("input_ids"), prompts, "input_ids");
  check_rows(out1.attention_mask, f.tensor("attention_mask"), prompts, "attention_mask");
  check_rows(out2.input_ids, f.tensor("input_ids_2"), prompts, "input_ids_2");
  check_rows(out2.attention_mask, f.tensor("attention_mask_2"), prompts, "attention_mask_2");
}

TEST_CASE("CLIPTokenizer text handling", "[model][tokenizer]") {
  auto tok = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sd/tokenizer");
  SECTION("case and whitespace do not matter") {
    CHECK(tok->encode("A  Photo\tOF\n a   CAT") == tok->encode("a photo of a cat"));
  }
  SECTION("special token text maps to its id") {
    CHECK(tok->encode("<|endoftext|>") == std::vector<int64_t>{999});
    CHECK(tok->encode("<|ENDOFTEXT|>") == std::vector<int64_t>{999});  // lowercased, then the regex keeps it whole
  }
  SECTION("max_length other than the model's") {
    const auto out = (*tok)({"a photo of an astronaut riding a horse on mars"}, 5);
    REQUIRE(out.input_ids.sizes() == at::IntArrayRef({1, 5}));
    CHECK(out.input_ids[0][0].item<int64_t>() == 998);
    CHECK(out.input_ids[0][4].item<int64_t>() == 999);
    CHECK(out.attention_mask.sum().item<int64_t>() == 5);
    CHECK_THROWS_AS((*tok)({"x"}, 1), InputError);
  }
  SECTION("an empty batch gives [0, 77]") {
    CHECK((*tok)({}).input_ids.sizes() == at::IntArrayRef({0, 77}));
  }
}

TEST_CASE("CLIPTokenizer treats prompt text as untrusted", "[model][tokenizer]") {
  auto tok = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sd/tokenizer");
  SECTION("invalid UTF-8 bytes are dropped (replaced by U+FFFD, which the CLIP cleanup removes)") {
    CHECK(tok->encode("a\xff\xfe photo\xc3") == tok->encode("a photo"));
    CHECK(tok->encode("\xed\xa0\x80 cat") == tok->encode("cat"));  // a UTF-16 surrogate
    CHECK(tok->encode("\xc0\xaf") == std::vector<int64_t>{});      // overlong "/"
    CHECK(tok->encode(std::string("a\0b", 3)) == tok->encode("ab"));  // NUL is a control character
  }
  SECTION("long and pathological prompts are handled (heap BPE, truncation stops early)") {
    std::string one_word(200000, 'q');  // one enormous word: heap BPE, not quadratic
    CHECK(!tok->encode(one_word).empty());
    std::string many;
    for (int i = 0; i < 50000; ++i) many += "astronaut riding zzxq \xf0\x9f\x9a\x80 ";
    const auto out = (*tok)({many, one_word});
    CHECK(out.attention_mask.sum().item<int64_t>() == 2 * 77);
  }
}

TEST_CASE("CLIPTokenizer rejects bad tokenizer files naming the file", "[model][tokenizer]") {
  const std::string src = kParity + "/models/tiny-sd/tokenizer";
  auto expect_error = [](const fs::path& dir, const std::string& needle) {
    try {
      CLIPTokenizer::from_pretrained(dir.string());
      FAIL("no ModelLoadError");
    } catch (const ModelLoadError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  SECTION("missing folder") { expect_error("/nonexistent/tokenizer", "/nonexistent/tokenizer"); }
  SECTION("missing vocab.json") {
    TempTokenizer t(src);
    fs::remove(t.dir / "vocab.json");
    expect_error(t.dir, "vocab.json");
  }
  SECTION("vocab.json is not JSON") {
    TempTokenizer t(src);
    t.write("vocab.json", "{\"a\": 1,");
    expect_error(t.dir, "vocab.json");
  }
  SECTION("vocab id is not an integer") {
    TempTokenizer t(src);
    t.write("vocab.json", "{\"a\": \"x\"}");
    expect_error(t.dir, "vocab.json");
  }
  SECTION("missing merges.txt") {
    TempTokenizer t(src);
    fs::remove(t.dir / "merges.txt");
    expect_error(t.dir, "merges.txt");
  }
  SECTION("merges.txt without #version line") {
    TempTokenizer t(src);
    t.write("merges.txt", "i n\nt h\n");
    expect_error(t.dir, "merges.txt");
  }
  SECTION("malformed merge line") {
    TempTokenizer t(src);
    t.write("merges.txt", "#version: 0.2\ni n\nt h e\n");
    expect_error(t.dir, "merges.txt' line 3");
  }
  SECTION("special token missing from the vocabulary") {
    TempTokenizer t(src);
    t.write("tokenizer_config.json", "{\"bos_token\": \"<|nope|>\"}");
    t.write("special_tokens_map.json", "{\"bos_token\": \"<|nope|>\"}");  // a legacy config gives way to the map
    expect_error(t.dir, "<|nope|>");
  }
  SECTION("tokenizer_config.json is not JSON") {
    TempTokenizer t(src);
    t.write("tokenizer_config.json", "[");
    expect_error(t.dir, "tokenizer_config.json");
  }
}
