// T5Tokenizer: exact match with transformers' slow T5Tokenizer on the DiT goldens, added tokens, truncation, bad
// folders and corrupt sentencepiece models.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/loading/diffusers_folder.h"
#include "models/register.h"
#include "models/text/t5_tokenizer.h"
#include "tools/parity/parity.h"
#include "tools/parity/t5_cases.h"
#include "tools/parity/text_cases.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kParity = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
const std::string kTok = kParity + "/models/tiny-flux/tokenizer_2";

/// A writable scratch copy of the tiny T5 tokenizer folder in a fresh temporary directory.
struct TempTokenizer {
  fs::path dir;
  TempTokenizer() {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_t5tok_" + std::to_string(rng()));
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kTok)) {
      fs::copy_file(e.path(), dir / e.path().filename());
      fs::permissions(dir / e.path().filename(), fs::perms::owner_read | fs::perms::owner_write);
    }
  }
  ~TempTokenizer() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::string read(const std::string& name) const {
    std::ifstream in(dir / name, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

std::string load_error(const fs::path& dir) {
  try {
    T5Tokenizer::from_pretrained(dir.string());
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "";
}

std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("T5Tokenizer matches transformers on t5_tokenizer (every length, every folder)", "[model][parity][tokenizer]") {
  register_text_case_runners();
  register_t5_case_runners();
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kParity + "/manifest_dit.json";
  o.filter_regex = "^t5_tokenizer$";
  o.verbose = true;
  const int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);
  CHECK(out.str().find("PASS t5_tokenizer ") != std::string::npos);
  // The same "tokenizer" kind still runs the CLIP cases with the CLIP runner.
  std::ostringstream clip;
  o.manifest = kParity + "/manifest.json";
  o.filter_regex = "^tiny_sd_tokenizer$";
  CHECK(run_parity(o, clip) == 0);
  INFO(clip.str());
  CHECK(clip.str().find("PASS tiny_sd_tokenizer ") != std::string::npos);
}

TEST_CASE("T5Tokenizer: special ids, <extra_id_k> and their whitespace stripping", "[model][tokenizer]") {
  auto tok = T5Tokenizer::from_pretrained(kTok);
  CHECK(tok->type() == "T5Tokenizer");
  CHECK(tok->vocab_size() == 400);
  CHECK(tok->extra_ids() == 100);
  CHECK(tok->pad_token_id() == 0);
  CHECK(tok->eos_token_id() == 1);
  CHECK(tok->unk_token_id() == 2);
  REQUIRE(tok->model_max_length());
  CHECK(*tok->model_max_length() == 512);
  // <extra_id_k> = pieces - 1 + extra_ids - k.
  CHECK(tok->encode("<extra_id_0>") == std::vector<int64_t>{499});
  CHECK(tok->encode("<extra_id_3>") == std::vector<int64_t>{496});
  CHECK(tok->encode("<extra_id_99>") == std::vector<int64_t>{400});
  CHECK(tok->token_to_id("<extra_id_10>") == 489);
  CHECK(tok->token_to_id("</s>") == 1);
  CHECK_FALSE(tok->token_to_id("<extra_id_100>").has_value());
  // lstrip/rstrip: the spaces around <extra_id_k> vanish, so each side is encoded as its own text.
  const auto a = tok->encode("a mask"), b = tok->encode("token");
  CHECK(tok->encode("a mask <extra_id_1>  token") == concat(concat(a, {498}), b));
  CHECK(tok->encode("a mask<extra_id_1>token") == concat(concat(a, {498}), b));
  // </s> strips nothing: the text after it gets its own dummy prefix, which "a mask </s>" does not merge into.
  const auto with_eos = tok->encode("a mask </s>end");
  CHECK(with_eos == concat(concat(a, {1}), tok->encode("end")));
  // Unknown characters map to <unk>; invalid UTF-8 is replaced (U+FFFD, itself unknown), never a crash.
  const auto rocket = tok->encode("\xF0\x9F\x9A\x80");
  CHECK(std::find(rocket.begin(), rocket.end(), 2) != rocket.end());
  CHECK_NOTHROW(tok->encode(std::string("a\xff\xfe b\xc3", 6)));
}

TEST_CASE("T5Tokenizer truncates to max_length - 1 and appends </s>", "[model][tokenizer]") {
  auto tok = T5Tokenizer::from_pretrained(kTok);
  const std::string longp = "a photo of an astronaut riding a horse on mars, highly detailed";
  const std::vector<int64_t> full = tok->encode(longp);
  REQUIRE(full.size() > 10);
  T5TokenizerOutput out = (*tok)({longp, "", "a cat</s>"}, 8);
  REQUIRE(out.input_ids.sizes() == at::IntArrayRef{3, 8});
  for (int64_t j = 0; j < 7; ++j) CHECK(out.input_ids[0][j].item<int64_t>() == full[static_cast<size_t>(j)]);
  CHECK(out.input_ids[0][7].item<int64_t>() == 1);  // </s> after the 7 kept ids
  CHECK(out.attention_mask[0].sum().item<int64_t>() == 8);
  CHECK(out.untruncated_lengths[0] == static_cast<int64_t>(full.size()) + 1);
  CHECK(tok->untruncated_length(longp) == static_cast<int64_t>(full.size()) + 1);
  // Empty prompt: just </s>, then padding with id 0 and mask 0.
  CHECK(out.input_ids[1][0].item<int64_t>() == 1);
  CHECK(out.input_ids[1].slice(0, 1).eq(0).all().item<bool>());
  CHECK(out.attention_mask[1].sum().item<int64_t>() == 1);
  CHECK(out.untruncated_lengths[1] == 1);
  // A prompt that already ends with </s> gets no second one.
  const auto cat = tok->encode("a cat</s>");
  REQUIRE(cat.back() == 1);
  CHECK(out.untruncated_lengths[2] == static_cast<int64_t>(cat.size()));
  CHECK(out.attention_mask[2].sum().item<int64_t>() == static_cast<int64_t>(cat.size()));
  CHECK(out.input_ids[2][static_cast<int64_t>(cat.size()) - 1].item<int64_t>() == 1);
  CHECK(out.input_ids[2][static_cast<int64_t>(cat.size())].item<int64_t>() == 0);
  // max_length 1 keeps only </s>; 0 is refused; -1 is model_max_length.
  CHECK((*tok)({longp}, 1).input_ids.equal(at::ones({1, 1}, at::kLong)));
  CHECK_THROWS_AS((*tok)({longp}, 0), InputError);
  CHECK((*tok)({longp}).input_ids.size(1) == 512);
}

TEST_CASE("T5Tokenizer refuses a folder with only tokenizer.json", "[model][tokenizer]") {
  TempTokenizer t;
  fs::remove(t.dir / "spiece.model");
  t.write("tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"Unigram\"}}");
  const std::string err = load_error(t.dir);
  INFO(err);
  CHECK(err.find("tokenizer.json") != std::string::npos);
  CHECK(err.find("spiece.model") != std::string::npos);
  CHECK(err.find("sentencepiece") != std::string::npos);
  fs::remove(t.dir / "tokenizer.json");
  CHECK(load_error(t.dir).find("spiece.model") != std::string::npos);
}

TEST_CASE("T5Tokenizer: a corrupt spiece.model is a ModelLoadError naming it, never a crash", "[model][tokenizer]") {
  TempTokenizer t;
  const std::string good = t.read("spiece.model");
  REQUIRE(good.size() > 1000);
  const std::string path = (t.dir / "spiece.model").string();
  for (const std::string& bad : {std::string("not a sentencepiece model"), std::string(), good.substr(0, good.size() / 3),
                                 std::string(64, '\xff')}) {
    t.write("spiece.model", bad);
    const std::string err = load_error(t.dir);
    INFO("corrupt model of " << bad.size() << " bytes: " << err);
    CHECK(err.find(path) != std::string::npos);
  }
  // Random byte flips: either a loadable model that encodes, or a ModelLoadError; nothing else.
  std::mt19937 rng(1234);
  for (int i = 0; i < 40; ++i) {
    std::string mutated = good;
    for (int k = 0; k < 8; ++k) mutated[rng() % mutated.size()] = static_cast<char>(rng() & 0xff);
    t.write("spiece.model", mutated);
    try {
      auto tok = T5Tokenizer::from_pretrained(t.dir.string());
      (void)(*tok)({"a photo of an astronaut <extra_id_0> é 東京"}, 16);
    } catch (const ModelLoadError&) {
    } catch (const InputError&) {
    }
  }
}

TEST_CASE("T5Tokenizer refuses unsupported tokenizer_config options by name", "[model][tokenizer]") {
  TempTokenizer t;
  nlohmann::json config = nlohmann::json::parse(t.read("tokenizer_config.json"));
  SECTION("legacy false") {
    config["legacy"] = false;
    t.write("tokenizer_config.json", config.dump());
    CHECK(load_error(t.dir).find("legacy") != std::string::npos);
  }
  SECTION("sampling kwargs") {
    config["sp_model_kwargs"] = {{"enable_sampling", true}};
    t.write("tokenizer_config.json", config.dump());
    CHECK(load_error(t.dir).find("sp_model_kwargs") != std::string::npos);
  }
  SECTION("no added_tokens_decoder: extra ids derived as T5Tokenizer.__init__ does") {
    config.erase("added_tokens_decoder");
    t.write("tokenizer_config.json", config.dump());
    fs::remove(t.dir / "added_tokens.json");
    auto tok = T5Tokenizer::from_pretrained(t.dir.string());
    CHECK(tok->encode("x <extra_id_0> y") == concat(concat(tok->encode("x"), {499}), tok->encode("y")));
    CHECK(tok->token_to_id("<extra_id_99>") == 400);
  }
}

TEST_CASE("T5Tokenizer and T5TokenizerFast are registered tokenizer components", "[model][tokenizer]") {
  Registry registry;
  register_builtin_models(registry);
  for (const char* type : {"T5Tokenizer", "T5TokenizerFast"}) {
    const auto* info = registry.find_component_type(type);
    REQUIRE(info);
    CHECK(info->category == ComponentCategory::Tokenizer);
    ComponentSpec spec;
    spec.name = "tokenizer_2";
    spec.type = type;
    spec.from = kParity + "/models/tiny-sd3";
    spec.subfolder = "tokenizer_3";
    auto tok = std::dynamic_pointer_cast<T5Tokenizer>(registry.create_component(spec));
    REQUIRE(tok);
    CHECK(tok->type() == type);
    CHECK(tok->encode("<extra_id_0>") == std::vector<int64_t>{499});
    spec.from.clear();
    CHECK_THROWS_AS(registry.create_component(spec), ValidationError);
  }
}
