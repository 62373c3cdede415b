// T5EncoderModel: config parsing and refusals, strict and tied-embedding loading (sharded, bf16), registry, and
// the t5_encoder_* goldens through the parity runner.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/text/t5_encoder.h"
#include "tools/parity/parity.h"
#include "tools/parity/t5_cases.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kParity = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
const std::string kFlux = kParity + "/models/tiny-flux";         // text_encoder_2: relu
const std::string kFluxDev = kParity + "/models/tiny-flux-dev";  // text_encoder_2: gated-gelu

/// A fresh temporary model folder with `text_encoder_2/config.json` copied from `src` (weights written by the test).
struct TempModel {
  fs::path dir;
  explicit TempModel(const std::string& src) {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_t5_" + std::to_string(rng()));
    fs::create_directories(dir / "text_encoder_2");
    fs::copy_file(src + "/text_encoder_2/config.json", dir / "text_encoder_2/config.json");
    fs::permissions(dir / "text_encoder_2/config.json", fs::perms::owner_read | fs::perms::owner_write);
  }
  ~TempModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / "text_encoder_2" / name).string(); }
  void save(const std::map<std::string, at::Tensor>& tensors, const std::string& name = "model.safetensors") const {
    save_safetensors(file(name), tensors);
  }
};

T5Config config_from(nlohmann::json j) {
  ModelConfig c(std::move(j), "test config.json");
  return T5Config::from_config(c);
}

std::string config_error(nlohmann::json j) {
  try {
    config_from(std::move(j));
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "";
}

at::Tensor run(const std::shared_ptr<T5EncoderModelImpl>& m, const at::Tensor& ids) {
  c10::InferenceMode guard;
  return m->forward(ids).last_hidden_state;
}

}  // namespace

TEST_CASE("T5Config reads config.json with transformers' defaults and derivations", "[model][t5]") {
  const T5Config d = config_from(nlohmann::json::object());
  CHECK(d.vocab_size() == 32128);
  CHECK(d.d_model() == 512);
  CHECK(d.d_kv() == 64);
  CHECK(d.d_ff() == 2048);
  CHECK(d.num_layers() == 6);
  CHECK(d.num_heads() == 8);
  CHECK(d.relative_attention_num_buckets() == 32);
  CHECK(d.relative_attention_max_distance() == 128);
  CHECK(d.layer_norm_epsilon() == Approx(1e-6));
  CHECK(d.feed_forward_proj() == "relu");
  CHECK(d.dense_act_fn() == "relu");
  CHECK_FALSE(d.is_gated_act());

  const T5Config relu = config_from(read_component_config(kFlux, "text_encoder_2"));
  CHECK(relu.d_model() == 32);
  CHECK(relu.d_ff() == 37);
  CHECK(relu.num_layers() == 2);
  CHECK(relu.relative_attention_num_buckets() == 8);
  CHECK(relu.vocab_size() == 500);
  CHECK_FALSE(relu.is_gated_act());
  const T5Config gated = config_from(read_component_config(kFluxDev, "text_encoder_2"));
  CHECK(gated.feed_forward_proj() == "gated-gelu");
  CHECK(gated.dense_act_fn() == "gelu_new");
  CHECK(gated.is_gated_act());
}

TEST_CASE("T5Config refuses what the encoder does not implement, by name", "[model][t5]") {
  std::string e = config_error({{"feed_forward_proj", "gated-silu"}});
  CHECK(e.find("feed_forward_proj") != std::string::npos);
  CHECK(e.find("gated-silu") != std::string::npos);
  CHECK(config_error({{"feed_forward_proj", "gelu"}}).find("feed_forward_proj") != std::string::npos);
  CHECK(config_error({{"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu"}}).find("dense_act_fn") !=
        std::string::npos);
  CHECK(config_error({{"feed_forward_proj", "relu"}, {"is_gated_act", true}}).find("is_gated_act") !=
        std::string::npos);
  CHECK(config_error({{"model_type", "umt5"}}).find("umt5") != std::string::npos);
  CHECK(config_error({{"d_model", 0}}).find("d_model") != std::string::npos);
  CHECK(config_error({{"relative_attention_num_buckets", 2}}).find("relative_attention_num_buckets") !=
        std::string::npos);
  CHECK(config_error({{"num_heads", "4"}}).find("num_heads") != std::string::npos);
  CHECK(config_error({{"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu_new"}, {"is_gated_act", true}})
            .empty());
}

TEST_CASE("T5 relative position buckets follow transformers' bidirectional bucketing", "[model][t5]") {
  // num_buckets 8, max_distance 128: 4 per direction, exact below 2, then log bins capped at 3 (+4 for keys after).
  const at::Tensor rel = at::tensor({-200, -128, -20, -3, -2, -1, 0, 1, 2, 3, 20, 128, 200}, at::kLong);
  const at::Tensor got = T5AttentionImpl::relative_position_bucket(rel, 8, 128);
  const at::Tensor expected = at::tensor({3, 3, 3, 2, 2, 1, 0, 5, 6, 6, 7, 7, 7}, at::kLong);
  INFO(got);
  CHECK(got.equal(expected));
}

TEST_CASE("t5_encoder_* golden cases pass", "[model][parity][t5]") {
  register_t5_case_runners();
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kParity + "/manifest_dit.json";
  o.filter_regex = "^t5_encoder_";
  o.verbose = true;
  const int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);
  for (const char* name : {"t5_encoder_relu", "t5_encoder_gated_gelu", "t5_encoder_gated_gelu_d96"})
    CHECK(out.str().find(std::string("PASS ") + name + " ") != std::string::npos);
}

TEST_CASE("T5EncoderModel loading is strict and handles the tied embedding", "[model][t5]") {
  const auto tensors = read_safetensors_files({kFlux + "/text_encoder_2/model.safetensors"});
  REQUIRE(tensors.count("shared.weight"));
  REQUIRE_FALSE(tensors.count("encoder.embed_tokens.weight"));
  auto reference = load_t5_encoder_model(kFlux, "text_encoder_2");
  CHECK(reference->type() == "T5EncoderModel");
  CHECK(reference->nbytes() > 100000);
  const at::Tensor ids = at::tensor({5, 17, 33, 1, 0, 0, 499, 2, 250, 9, 44, 1}, at::kLong).view({2, 6});
  const at::Tensor expected = run(reference, ids);
  TempModel t(kFlux);

  SECTION("a missing or renamed tensor is named") {
    auto m = tensors;
    m["encoder.block.1.layer.1.layer_norm.scale"] = m["encoder.block.1.layer.1.layer_norm.weight"];
    m.erase("encoder.block.1.layer.1.layer_norm.weight");
    t.save(m);
    CHECK_THROWS_WITH(load_t5_encoder_model(t.dir.string(), "text_encoder_2"),
                      Catch::Contains("encoder.block.1.layer.1.layer_norm.weight") &&
                          Catch::Contains("layer_norm.scale"));
  }
  SECTION("a relative bias outside block 0 is unexpected (that is UMT5)") {
    auto m = tensors;
    m["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] =
        m["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"];
    t.save(m);
    CHECK_THROWS_WITH(load_t5_encoder_model(t.dir.string(), "text_encoder_2"),
                      Catch::Contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"));
  }
  SECTION("neither shared.weight nor encoder.embed_tokens.weight") {
    auto m = tensors;
    m.erase("shared.weight");
    t.save(m);
    CHECK_THROWS_WITH(load_t5_encoder_model(t.dir.string(), "text_encoder_2"),
                      Catch::Contains("shared.weight") && Catch::Contains("encoder.embed_tokens.weight"));
  }
  SECTION("only encoder.embed_tokens.weight: loaded as shared.weight") {
    auto m = tensors;
    m["encoder.embed_tokens.weight"] = m["shared.weight"];
    m.erase("shared.weight");
    t.save(m);
    auto model = load_t5_encoder_model(t.dir.string(), "text_encoder_2");
    CHECK(run(model, ids).equal(expected));
  }
  SECTION("both, equal: loads") {
    auto m = tensors;
    m["encoder.embed_tokens.weight"] = m["shared.weight"].clone();
    t.save(m);
    CHECK(run(load_t5_encoder_model(t.dir.string(), "text_encoder_2"), ids).equal(expected));
  }
  SECTION("both, different: a ModelLoadError, not a silent pick") {
    auto m = tensors;
    m["encoder.embed_tokens.weight"] = m["shared.weight"] + 0.5;
    t.save(m);
    CHECK_THROWS_WITH(load_t5_encoder_model(t.dir.string(), "text_encoder_2"),
                      Catch::Contains("shared.weight") && Catch::Contains("encoder.embed_tokens.weight") &&
                          Catch::Contains("differ"));
  }
  SECTION("a mis-shaped embedding is named with both shapes") {
    auto m = tensors;
    m["shared.weight"] = m["shared.weight"].slice(0, 0, 400).contiguous();
    t.save(m);
    CHECK_THROWS_WITH(load_t5_encoder_model(t.dir.string(), "text_encoder_2"),
                      Catch::Contains("shared.weight") && Catch::Contains("[400, 32]") &&
                          Catch::Contains("[500, 32]"));
  }
  SECTION("bf16 shards with an index load, converted to float32") {
    std::map<std::string, at::Tensor> shard1, shard2;
    nlohmann::json weight_map = nlohmann::json::object();
    for (const auto& [name, tensor] : tensors) {
      const bool first = name.rfind("encoder.block.0.", 0) == 0 || name == "shared.weight";
      (first ? shard1 : shard2)[name] = tensor.to(at::kBFloat16);
      weight_map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    t.save(shard1, "model-00001-of-00002.safetensors");
    t.save(shard2, "model-00002-of-00002.safetensors");
    std::ofstream(t.file("model.safetensors.index.json"))
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
    auto model = load_t5_encoder_model(t.dir.string(), "text_encoder_2");
    CHECK(model->shared->weight.scalar_type() == at::kFloat);
    CHECK(model->shared->weight.equal(tensors.at("shared.weight").to(at::kBFloat16).to(at::kFloat)));
    const at::Tensor got = run(model, ids);
    CHECK((got - expected).abs().max().item<double>() < 0.1);  // bf16 weights: close, not equal
    // The same shards computing in bfloat16: float32 outputs, cosine close to the float32 run.
    auto bf16 = load_t5_encoder_model(t.dir.string(), "text_encoder_2", "", at::kBFloat16);
    CHECK(bf16->shared->weight.scalar_type() == at::kBFloat16);
    const at::Tensor got16 = run(bf16, ids);
    CHECK(got16.scalar_type() == at::kFloat);
    CHECK(at::cosine_similarity(got16.flatten(), expected.flatten(), 0).item<double>() > 0.99);
  }
}

TEST_CASE("T5EncoderModel forward: hidden states, mask, input checks", "[model][t5]") {
  auto model = load_t5_encoder_model(kFluxDev, "text_encoder_2");
  c10::InferenceMode guard;
  const at::Tensor ids = at::tensor({5, 17, 33, 1, 0, 0, 499, 2, 250, 9, 44, 1}, at::kLong).view({2, 6});
  const T5EncoderModelOutput out = model->forward(ids, {}, true);
  REQUIRE(out.hidden_states.size() == 3);  // embeddings, block 0, normed output
  CHECK(out.hidden_states.front().equal(out.inputs_embeds));
  CHECK(out.hidden_states.back().equal(out.last_hidden_state));
  CHECK(out.last_hidden_state.sizes() == at::IntArrayRef{2, 6, 32});
  CHECK(out.inputs_embeds.equal(model->shared->weight.index({ids})));
  // A mask of ones changes nothing; masking the padding changes the real tokens' states.
  const at::Tensor ones = at::ones_like(ids);
  CHECK(model->forward(ids, ones).last_hidden_state.equal(out.last_hidden_state));
  const at::Tensor mask = ids.ne(0).to(at::kLong);
  CHECK_FALSE(model->forward(ids, mask).last_hidden_state.equal(out.last_hidden_state));
  CHECK_THROWS_AS(model->forward(ids.flatten()), InputError);
  CHECK_THROWS_AS(model->forward(ids.to(at::kFloat)), InputError);
  CHECK_THROWS_AS(model->forward(ids, mask.slice(1, 0, 3)), InputError);
  CHECK_THROWS_AS(model->check_input_ids(ids + 10), InputError);  // 509 >= vocab_size 500
  CHECK_NOTHROW(model->check_input_ids(ids));
}

TEST_CASE("T5EncoderModel is a registered component (from a folder or from a config)", "[model][t5]") {
  Registry registry;
  register_builtin_models(registry);
  const auto* info = registry.find_component_type("T5EncoderModel");
  REQUIRE(info);
  CHECK(info->category == ComponentCategory::Model);
  ComponentSpec spec;
  spec.name = "text_encoder_2";
  spec.type = "T5EncoderModel";
  spec.from = kFlux;
  spec.subfolder = "text_encoder_2";
  auto loaded = std::dynamic_pointer_cast<T5EncoderModelImpl>(registry.create_component(spec));
  REQUIRE(loaded);
  CHECK(loaded->config.vocab_size() == 500);

  ComponentSpec random;
  random.name = "t5";
  random.type = "T5EncoderModel";
  random.creation = Creation::FromConfig;
  random.config = Value(ValueMap{{"d_model", Value(int64_t(16))},
                              {"d_kv", Value(int64_t(4))},
                              {"d_ff", Value(int64_t(24))},
                              {"num_layers", Value(int64_t(3))},
                              {"num_heads", Value(int64_t(2))},
                              {"vocab_size", Value(int64_t(64))},
                              {"feed_forward_proj", Value(std::string("gated-gelu"))}});
  auto model = std::dynamic_pointer_cast<T5EncoderModelImpl>(registry.create_component(random));
  REQUIRE(model);
  CHECK(model->config.is_gated_act());
  c10::InferenceMode guard;
  CHECK(model->forward(at::randint(0, 64, {2, 7}, at::kLong)).last_hidden_state.sizes() == at::IntArrayRef{2, 7, 16});
}
