// Model loading infrastructure: diffusers folders, weight-file resolution, model configs and strict
// state-dict loading, exercised on copies of the tiny-sd VAE rewritten into broken or alternative layouts.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/state_dict.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kTinySd = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models/tiny-sd";
const std::string kVaeFile = kTinySd + "/vae/diffusion_pytorch_model.safetensors";

// A fresh temp folder holding a copy of tiny-sd/vae's config.json; removed at scope end.
struct TempVae {
  fs::path dir;
  TempVae() {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_models_" + std::to_string(rng()));
    fs::create_directories(dir);
    fs::copy_file(kTinySd + "/vae/config.json", dir / "config.json");
  }
  ~TempVae() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

std::map<std::string, at::Tensor> vae_tensors() { return read_safetensors_files({kVaeFile}); }

// A module with one parameter per tensor of a state dict, nested by the dotted names: stands in for a model
// whose keys match the checkpoint, independent of any model class.
std::shared_ptr<torch::nn::Module> mirror_module(const std::map<std::string, at::Tensor>& tensors) {
  auto root = std::make_shared<torch::nn::Module>("Mirror");
  for (const auto& [name, t] : tensors) {
    torch::nn::Module* m = root.get();
    std::string rest = name;
    size_t dot;
    while ((dot = rest.find('.')) != std::string::npos) {
      std::string part = rest.substr(0, dot);
      rest = rest.substr(dot + 1);
      auto children = m->named_children();
      if (auto* child = children.find(part)) m = child->get();
      else m = m->register_module(part, std::make_shared<torch::nn::Module>()).get();
    }
    m->register_parameter(rest, torch::zeros(t.sizes()));
  }
  return root;
}

std::string load_error(torch::nn::Module& m, const std::vector<std::string>& files,
                       const LoadStateDictOptions& o = {}) {
  try {
    load_state_dict(m, files, o);
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("model_index.json and component configs are read; errors name the file", "[model][loading]") {
  auto index = read_model_index(kTinySd);
  CHECK(index["_class_name"] == "StableDiffusionPipeline");
  auto config = read_component_config(kTinySd, "vae");
  CHECK(config["_class_name"] == "AutoencoderKL");

  TempVae t;
  CHECK_THROWS_WITH(read_component_config(t.dir.string(), "", "missing.json"),
                    Catch::Contains("missing.json"));
  std::ofstream(t.path("bad.json")) << "{\"a\": 1,";
  CHECK_THROWS_AS(read_component_config(t.dir.string(), "", "bad.json"), ModelLoadError);
  CHECK_THROWS_WITH(read_component_config(t.dir.string(), "", "bad.json"), Catch::Contains("bad.json"));
  CHECK_THROWS_WITH(read_model_index(t.dir.string()), Catch::Contains("model_index.json"));
  CHECK_THROWS_WITH(read_component_config(kTinySd, "nope"), Catch::Contains("nope"));
  // Python's NaN / Infinity literals parse.
  std::ofstream(t.path("nan.json")) << "{\"x\": NaN, \"y\": -Infinity, \"s\": \"NaN in a string\"}";
  ModelConfig c(read_component_config(t.dir.string(), "", "nan.json"), "nan.json");
  CHECK(std::isnan(c.get_float("x", 0)));
  CHECK(std::isinf(c.get_float("y", 0)));
  CHECK(c.get_string("s", "") == "NaN in a string");
}

TEST_CASE("ModelConfig: typed getters, diffusers defaults, errors naming field and file", "[model][loading]") {
  ModelConfig c = ModelConfig::from_folder(kTinySd, "vae");
  CHECK(c.get_int("in_channels", 3) == 3);
  CHECK(c.get_int_list("block_out_channels", {64}) == std::vector<int64_t>{32, 64});
  CHECK(c.get_string_list("down_block_types", {}).size() == 2);
  CHECK(c.get_float("scaling_factor", 0.18215) == Approx(0.18215));
  CHECK_FALSE(c.get_optional_float("shift_factor").has_value());   // null
  CHECK(c.get_float("shift_factor", 0.0) == 0.0);                   // null reads as the default
  CHECK(c.get_bool("force_upcast", false));
  CHECK(c.get_int("not_in_file", 7) == 7);
  CHECK_THROWS_WITH(c.get_int("act_fn", 0), Catch::Contains("act_fn") && Catch::Contains("config.json"));
  CHECK_THROWS_AS(c.get_bool("in_channels", false), ModelLoadError);
  CHECK_THROWS_WITH(c.get_int_list("act_fn", {}), Catch::Contains("act_fn"));

  ModelConfig d(nlohmann::json{{"head", 8}, {"heads", {1, 2}}, {"bad", {1, "x"}}, {"f", 2}, {"mode", "a"}},
                "test.json");
  CHECK(d.get_int_or_list("head", 0, 3) == std::vector<int64_t>{8, 8, 8});
  CHECK(d.get_int_or_list("heads", 0, 2) == std::vector<int64_t>{1, 2});
  CHECK(d.get_int_or_list("absent", 5, 2) == std::vector<int64_t>{5, 5});
  CHECK_THROWS_WITH(d.get_int_or_list("heads", 0, 3), Catch::Contains("heads") && Catch::Contains("test.json"));
  CHECK_THROWS_WITH(d.get_int_list("bad", {}), Catch::Contains("entry 1"));
  CHECK(d.get_float("f", 0) == 2.0);  // ints read as floats
  CHECK_THROWS_WITH(d.get_choice("mode", "a", {"b", "c"}), Catch::Contains("'b'"));
  d.apply_overrides(nlohmann::json{{"head", 4}});
  CHECK(d.get_int("head", 0) == 4);
  d.finish();
  d.finish();  // warns once only
}

TEST_CASE("weight files: single, variant, sharded index; clear errors", "[model][loading]") {
  auto tensors = vae_tensors();
  SECTION("single file") {
    auto files = resolve_weight_files(kTinySd + "/vae", kDiffusersWeightsName);
    REQUIRE(files.size() == 1);
    CHECK(files[0] == kVaeFile);
  }
  SECTION("missing weights name the folder and what was looked for") {
    TempVae t;
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName),
                      Catch::Contains(t.dir.string()) && Catch::Contains("diffusion_pytorch_model.safetensors") &&
                          Catch::Contains("diffusion_pytorch_model.safetensors.index.json"));
    std::ofstream(t.path("diffusion_pytorch_model.bin")) << "pickle";
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName), Catch::Contains(".bin"));
  }
  SECTION("variant file, converted from float16 to float32") {
    TempVae t;
    std::map<std::string, at::Tensor> half;
    for (const auto& [k, v] : tensors) half[k] = v.to(at::kHalf);
    save_safetensors(t.path("diffusion_pytorch_model.fp16.safetensors"), half);
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName),
                      Catch::Contains("diffusion_pytorch_model.fp16.safetensors"));  // hint lists it
    auto files = resolve_weight_files(t.dir.string(), kDiffusersWeightsName, "fp16");
    REQUIRE(files.size() == 1);
    auto m = mirror_module(tensors);
    load_state_dict(*m, files);
    for (const auto& p : m->named_parameters()) {
      CHECK(p.value().scalar_type() == at::kFloat);
      CHECK(p.value().allclose(tensors[p.key()], 1e-2, 1e-3));
    }
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName, "bf16"),
                      Catch::Contains("bf16"));
  }
  SECTION("sharded with an index (plain and variant), shards in first-appearance order") {
    TempVae t;
    std::map<std::string, at::Tensor> a, b;
    nlohmann::json weight_map;
    size_t i = 0;
    for (const auto& [k, v] : tensors) {
      bool first = i++ < tensors.size() / 2;
      (first ? a : b)[k] = v;
      weight_map[k] = first ? "diffusion_pytorch_model-00001-of-00002.safetensors"
                            : "diffusion_pytorch_model-00002-of-00002.safetensors";
    }
    save_safetensors(t.path("diffusion_pytorch_model-00001-of-00002.safetensors"), a);
    save_safetensors(t.path("diffusion_pytorch_model-00002-of-00002.safetensors"), b);
    std::ofstream(t.path("diffusion_pytorch_model.safetensors.index.json"))
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
    auto files = resolve_weight_files(t.dir.string(), kDiffusersWeightsName);
    REQUIRE(files.size() == 2);
    CHECK(files[0] == t.path("diffusion_pytorch_model-00001-of-00002.safetensors"));
    auto m = mirror_module(tensors);
    load_state_dict(*m, files);
    for (const auto& p : m->named_parameters()) CHECK(p.value().equal(tensors[p.key()]));

    fs::copy_file(t.path("diffusion_pytorch_model.safetensors.index.json"),
                  t.path("diffusion_pytorch_model.safetensors.index.fp16.json"));
    CHECK(resolve_weight_files(t.dir.string(), kDiffusersWeightsName, "fp16").size() == 2);

    // A tensor in two shards is a problem.
    save_safetensors(t.path("diffusion_pytorch_model-00002-of-00002.safetensors"), tensors);
    CHECK_THROWS_WITH(load_state_dict(*m, files), Catch::Contains("two files"));

    fs::remove(t.path("diffusion_pytorch_model-00002-of-00002.safetensors"));
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName),
                      Catch::Contains("00002-of-00002") && Catch::Contains("missing"));
    std::ofstream(t.path("diffusion_pytorch_model.safetensors.index.json"))
        << R"({"weight_map": {"x": "../escape.safetensors"}})";
    CHECK_THROWS_WITH(resolve_weight_files(t.dir.string(), kDiffusersWeightsName),
                      Catch::Contains("plain file name"));
  }
}

TEST_CASE("load_state_dict is strict and names every problem", "[model][loading]") {
  auto tensors = vae_tensors();
  const std::string renamed_key = "decoder.conv_in.weight";
  const std::string reshaped_key = "encoder.conv_out.bias";
  REQUIRE(tensors.count(renamed_key));
  REQUIRE(tensors.count(reshaped_key));

  SECTION("loads exactly, without copying float32 data") {
    auto m = mirror_module(tensors);
    load_state_dict(*m, {kVaeFile});
    for (const auto& p : m->named_parameters()) CHECK(p.value().equal(tensors[p.key()]));
    CHECK(module_nbytes(*m) == fs::file_size(kVaeFile) - 8 - [] {
      std::ifstream in(kVaeFile, std::ios::binary);
      uint64_t n = 0;
      in.read(reinterpret_cast<char*>(&n), 8);
      return n;
    }());
  }
  SECTION("renamed tensor: missing and unexpected, with a did-you-mean") {
    TempVae t;
    auto changed = tensors;
    changed["decoder.conv_inn.weight"] = changed[renamed_key];
    changed.erase(renamed_key);
    save_safetensors(t.path("w.safetensors"), changed);
    auto m = mirror_module(tensors);
    std::string err = load_error(*m, {t.path("w.safetensors")});
    CHECK_THAT(err, Catch::Contains("'" + renamed_key + "'") && Catch::Contains("missing") &&
                        Catch::Contains("decoder.conv_inn.weight") && Catch::Contains("w.safetensors") &&
                        Catch::Contains("2 state-dict problems"));
    // Nothing was loaded.
    for (const auto& p : m->named_parameters()) CHECK(p.value().abs().sum().item<double>() == 0.0);
  }
  SECTION("reshaped tensor: both shapes and the file") {
    TempVae t;
    auto changed = tensors;
    changed[reshaped_key] = changed[reshaped_key].reshape({2, -1});
    save_safetensors(t.path("w.safetensors"), changed);
    auto m = mirror_module(tensors);
    std::string err = load_error(*m, {t.path("w.safetensors")});
    CHECK_THAT(err, Catch::Contains(reshaped_key) && Catch::Contains("[2, 4]") && Catch::Contains("[8]") &&
                        Catch::Contains("w.safetensors"));
  }
  SECTION("truncated file") {
    TempVae t;
    auto size = fs::file_size(kVaeFile);
    fs::copy_file(kVaeFile, t.path("w.safetensors"));
    fs::resize_file(t.path("w.safetensors"), size - 1000);
    auto m = mirror_module(tensors);
    CHECK_THROWS_AS(load_state_dict(*m, {t.path("w.safetensors")}), ModelLoadError);
    CHECK_THAT(load_error(*m, {t.path("w.safetensors")}), Catch::Contains("w.safetensors"));
  }
  SECTION("many problems are listed up to the limit") {
    auto m = mirror_module(tensors);
    std::map<std::string, at::Tensor> other;
    for (int i = 0; i < 5; ++i) other["extra." + std::to_string(i)] = torch::zeros({1});
    TempVae t;
    save_safetensors(t.path("w.safetensors"), other);
    std::string err = load_error(*m, {t.path("w.safetensors")});
    CHECK_THAT(err, Catch::Contains("more") && Catch::Contains("5 unexpected"));
  }
  SECTION("ignore list for non-persistent keys; bf16 converted") {
    TempVae t;
    auto changed = tensors;
    changed["text_model.embeddings.position_ids"] = torch::arange(77).unsqueeze(0);
    for (auto& [k, v] : changed)
      if (v.is_floating_point()) v = v.to(at::kBFloat16);
    save_safetensors(t.path("w.safetensors"), changed);
    auto m = mirror_module(tensors);
    CHECK_THAT(load_error(*m, {t.path("w.safetensors")}), Catch::Contains("position_ids"));
    LoadStateDictOptions o;
    o.ignore = {"position_ids"};
    load_state_dict(*m, {t.path("w.safetensors")}, o);
    for (const auto& p : m->named_parameters()) {
      CHECK(p.value().scalar_type() == at::kFloat);
      CHECK(p.value().allclose(tensors[p.key()], 1e-2, 1e-2));
    }
  }
}
