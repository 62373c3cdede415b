// Shipped defaults (models/defaults/): every family folder parses into Tessera's config structs with the values of
// the published configs, the shipped tokenizers give the published input_ids, and lookups fail with clear errors.
// Only configs are built here, never a full-size model.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/model_defaults.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"
#include "schedulers/register.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kDefaults = std::string(TESSERA_SOURCE_DIR) + "/models/defaults";

std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// Sets an environment variable for one scope, restoring the previous value (or its absence) at the end.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(std::string n, const std::optional<std::string>& value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    if (value) setenv(name.c_str(), value->c_str(), 1);
    else unsetenv(name.c_str());
  }
  ~ScopedEnv() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

/// A text encoder's shape, as its config.json states it.
struct TextEncoderFacts {
  std::string type;  // CLIPTextModel | CLIPTextModelWithProjection
  int64_t hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, projection_dim;
  std::string hidden_act;
};

/// The values per family that a wrong or swapped file would change (from the published configs).
struct FamilyFacts {
  std::string pipeline, scheduler, prediction_type;
  int64_t in_channels;
  int64_t cross_attention_dim;
  int64_t sample_size;
  std::vector<int64_t> attention_head_dim, block_out_channels;
  bool use_linear_projection, upcast_attention;
  std::optional<int64_t> projection_class_embeddings_input_dim;
  double scaling_factor;
  bool force_upcast;
  int64_t vae_sample_size;
  std::map<std::string, TextEncoderFacts> text_encoders;  // subfolder -> facts
  std::map<std::string, int64_t> pad_token_ids;           // tokenizer subfolder -> pad id
};

const TextEncoderFacts kClipL{"CLIPTextModel", 768, 12, 12, 3072, 768, "quick_gelu"};
const TextEncoderFacts kOpenClipH{"CLIPTextModel", 1024, 23, 16, 4096, 512, "gelu"};
const TextEncoderFacts kOpenClipG{"CLIPTextModelWithProjection", 1280, 32, 20, 5120, 1280, "gelu"};
constexpr int64_t kEos = 49407, kBang = 0;  // "<|endoftext|>" and "!" in the CLIP vocabulary
const std::vector<int64_t> kSdChannels{320, 640, 1280, 1280}, kSd2Heads{5, 10, 20, 20};

const std::map<std::string, FamilyFacts>& family_facts() {
  static const std::map<std::string, FamilyFacts> facts = {
      {"sd1", {"StableDiffusionPipeline", "PNDMScheduler", "epsilon", 4, 768, 64, {8, 8, 8, 8}, kSdChannels, false,
               false, std::nullopt, 0.18215, true, 512, {{"text_encoder", kClipL}}, {{"tokenizer", kEos}}}},
      {"sd1-inpaint", {"StableDiffusionInpaintPipeline", "DDIMScheduler", "epsilon", 9, 768, 64, {8, 8, 8, 8},
                       kSdChannels, false, false, std::nullopt, 0.18215, true, 256, {{"text_encoder", kClipL}},
                       {{"tokenizer", kEos}}}},
      {"sd2", {"StableDiffusionPipeline", "PNDMScheduler", "epsilon", 4, 1024, 64, kSd2Heads, kSdChannels, true, false,
               std::nullopt, 0.18215, true, 768, {{"text_encoder", kOpenClipH}}, {{"tokenizer", kBang}}}},
      {"sd2-v", {"StableDiffusionPipeline", "DDIMScheduler", "v_prediction", 4, 1024, 96, kSd2Heads, kSdChannels, true,
                 true, std::nullopt, 0.18215, true, 768, {{"text_encoder", kOpenClipH}}, {{"tokenizer", kBang}}}},
      {"sd2-inpaint", {"StableDiffusionInpaintPipeline", "PNDMScheduler", "epsilon", 9, 1024, 64, kSd2Heads,
                       kSdChannels, true, false, std::nullopt, 0.18215, true, 512, {{"text_encoder", kOpenClipH}},
                       {{"tokenizer", kBang}}}},
      {"sdxl-base", {"StableDiffusionXLPipeline", "EulerDiscreteScheduler", "epsilon", 4, 2048, 128, {5, 10, 20},
                     {320, 640, 1280}, true, false, 2816, 0.13025, true, 1024,
                     {{"text_encoder", kClipL}, {"text_encoder_2", kOpenClipG}},
                     {{"tokenizer", kEos}, {"tokenizer_2", kBang}}}},
      {"sdxl-refiner", {"StableDiffusionXLImg2ImgPipeline", "EulerDiscreteScheduler", "epsilon", 4, 1280, 128,
                        {6, 12, 24, 24}, {384, 768, 1536, 1536}, true, false, 2560, 0.13025, true, 1024,
                        {{"text_encoder_2", kOpenClipG}}, {{"tokenizer_2", kBang}}}},
      {"sdxl-inpaint", {"StableDiffusionXLInpaintPipeline", "EulerDiscreteScheduler", "epsilon", 9, 2048, 128,
                        {5, 10, 20}, {320, 640, 1280}, true, false, 2816, 0.13025, false, 512,
                        {{"text_encoder", kClipL}, {"text_encoder_2", kOpenClipG}},
                        {{"tokenizer", kEos}, {"tokenizer_2", kBang}}}},
  };
  return facts;
}

}  // namespace

TEST_CASE("shipped defaults are found in the source tree, or where TESSERA_DEFAULTS_DIR points", "[defaults]") {
  {
    ScopedEnv env("TESSERA_DEFAULTS_DIR", std::nullopt);
    CHECK(fs::equivalent(shipped_defaults_dir(), kDefaults));
    CHECK(fs::equivalent(shipped_family_dir("sd1"), kDefaults + "/sd1"));
    CHECK(fs::equivalent(shipped_clip_vocab_dir(), kDefaults + "/clip"));
    CHECK(fs::exists(fs::path(shipped_clip_vocab_dir()) / "vocab.json"));
    CHECK(fs::exists(fs::path(shipped_clip_vocab_dir()) / "merges.txt"));
  }
  {
    const fs::path other = fs::temp_directory_path() / ("tessera_defaults_" + std::to_string(::getpid()));
    fs::create_directories(other / "sd2");
    ScopedEnv env("TESSERA_DEFAULTS_DIR", other.string());
    CHECK(shipped_defaults_dir() == other.string());
    CHECK(shipped_family_dir("sd2") == (other / "sd2").string());
    const std::string msg = error_text([] { shipped_family_dir("sd1"); });  // known, but not in that folder
    CHECK(msg.find((other / "sd1").string()) != std::string::npos);
    CHECK_THROWS_AS(shipped_clip_vocab_dir(), ModelLoadError);
    fs::remove_all(other);
  }
  {
    ScopedEnv env("TESSERA_DEFAULTS_DIR", std::string("/nonexistent/tessera-defaults"));
    const std::string msg = error_text([] { shipped_defaults_dir(); });
    CHECK(msg.find("/nonexistent/tessera-defaults") != std::string::npos);
    CHECK_THROWS_AS(shipped_defaults_dir(), ModelLoadError);
  }
}

TEST_CASE("an unknown family names every shipped family", "[defaults]") {
  CHECK_THROWS_AS(shipped_family_dir("sd3"), ModelLoadError);
  const std::string msg = error_text([] { shipped_family_dir("sdxl_base"); });
  CHECK(msg.find("'sdxl_base'") != std::string::npos);
  CHECK(msg.find("did you mean 'sdxl-base'") != std::string::npos);
  for (const auto& family : shipped_families()) {
    INFO(family);
    CHECK(msg.find(family) != std::string::npos);
  }
}

TEST_CASE("every shipped family folder parses into its configs with the published values", "[defaults]") {
  std::set<std::string> listed;
  for (const auto& e : fs::directory_iterator(kDefaults))
    if (e.is_directory() && e.path().filename() != "clip") listed.insert(e.path().filename().string());
  const auto families = shipped_families();
  CHECK(listed == std::set<std::string>(families.begin(), families.end()));
  REQUIRE(family_facts().size() == families.size());

  for (const auto& family : families) {
    INFO("family " << family);
    const FamilyFacts& want = family_facts().at(family);
    const std::string dir = shipped_family_dir(family);
    const nlohmann::json index = read_model_index(dir);
    CHECK(index.value("_class_name", "") == want.pipeline);
    CHECK(index.contains("_diffusers_version"));
    // No weights and no vocabulary in a family folder: those come from the checkpoint and from clip/.
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      INFO(e.path());
      if (!e.is_regular_file()) continue;
      CHECK(e.path().extension() == ".json");
      CHECK(e.path().filename() != "vocab.json");
    }

    std::set<std::string> components;
    for (auto it = index.begin(); it != index.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& entry = it.value();
      if (name.empty() || name[0] == '_' || !entry.is_array()) continue;
      REQUIRE(entry.size() == 2);
      if (entry[0].is_null()) continue;  // a component the pipeline does without (the refiner's CLIP-L)
      const std::string cls = entry[1].get<std::string>();
      INFO("component " << name << " (" << cls << ")");
      // The safety checker and its image processor are listed as published; Tessera runs neither.
      if (cls == "StableDiffusionSafetyChecker" || cls == "CLIPImageProcessor") {
        CHECK_FALSE(fs::exists(fs::path(dir) / name));
        continue;
      }
      components.insert(name);
      if (cls == "UNet2DConditionModel") {
        ModelConfig c = ModelConfig::from_folder(dir, name);
        const auto u = UNet2DConditionModelConfig::from_config(c);
        c.finish();
        CHECK(u.in_channels == want.in_channels);
        CHECK(u.out_channels == 4);
        CHECK(u.cross_attention_dim == std::vector<int64_t>(u.down_block_types.size(), want.cross_attention_dim));
        CHECK(u.sample_size == want.sample_size);
        CHECK(u.attention_head_dim == want.attention_head_dim);
        CHECK(u.block_out_channels == want.block_out_channels);
        CHECK(u.use_linear_projection == want.use_linear_projection);
        CHECK(u.upcast_attention == want.upcast_attention);
        CHECK(u.projection_class_embeddings_input_dim == want.projection_class_embeddings_input_dim);
        if (want.projection_class_embeddings_input_dim) {
          CHECK(u.addition_embed_type == std::optional<std::string>("text_time"));
          CHECK(u.addition_time_embed_dim == std::optional<int64_t>(256));
        }
        if (family == "sdxl-base" || family == "sdxl-inpaint")
          CHECK(u.transformer_layers_per_block == std::vector<int64_t>{1, 2, 10});
        if (family == "sdxl-refiner") CHECK(u.transformer_layers_per_block == std::vector<int64_t>{4, 4, 4, 4});
      } else if (cls == "AutoencoderKL") {
        ModelConfig c = ModelConfig::from_folder(dir, name);
        const auto v = AutoencoderKLConfig::from_config(c);
        c.finish();
        CHECK(v.scaling_factor == Approx(want.scaling_factor));
        CHECK(v.force_upcast == want.force_upcast);
        CHECK(v.sample_size == want.vae_sample_size);
        CHECK(v.latent_channels == 4);
        CHECK(v.block_out_channels == std::vector<int64_t>{128, 256, 512, 512});
      } else if (cls == "CLIPTextModel" || cls == "CLIPTextModelWithProjection") {
        REQUIRE(want.text_encoders.count(name) == 1);
        const TextEncoderFacts& te = want.text_encoders.at(name);
        CHECK(cls == te.type);
        ModelConfig c = ModelConfig::from_folder(dir, name);
        const auto t = CLIPTextConfig::from_config(c);
        c.finish();
        CHECK(t.hidden_size() == te.hidden_size);
        CHECK(t.num_hidden_layers() == te.num_hidden_layers);
        CHECK(t.num_attention_heads() == te.num_attention_heads);
        CHECK(t.intermediate_size() == te.intermediate_size);
        CHECK(t.projection_dim() == te.projection_dim);
        CHECK(t.hidden_act() == te.hidden_act);
        CHECK(t.max_position_embeddings() == 77);
        CHECK(t.vocab_size() == 49408);
      } else if (cls == "CLIPTokenizer") {
        REQUIRE(want.pad_token_ids.count(name) == 1);
        auto tok = CLIPTokenizer::from_pretrained((fs::path(dir) / name).string(), shipped_clip_vocab_dir());
        CHECK(tok->pad_token_id() == want.pad_token_ids.at(name));
        CHECK(tok->model_max_length() == 77);
        CHECK(tok->bos_token_id() == 49406);
        CHECK(tok->eos_token_id() == kEos);
        CHECK(tok->vocab_size() == 49408);
      } else if (name == "scheduler") {
        CHECK(cls == want.scheduler);
        const std::string path = (fs::path(dir) / "scheduler" / "scheduler_config.json").string();
        const nlohmann::json j = read_json_file(path);
        CHECK(j.value("prediction_type", std::string("epsilon")) == want.prediction_type);
        CHECK(j.value("beta_schedule", "") == "scaled_linear");
        CHECK(j.value("beta_start", 0.0) == Approx(0.00085));
        CHECK(j.value("beta_end", 0.0) == Approx(0.012));
        CHECK(j.value("steps_offset", 0) == 1);
        auto s = load_scheduler(cls, path);
        CHECK(s->type() == cls);
        CHECK(s->num_train_timesteps() == 1000);
        s->set_timesteps(10);
        CHECK(s->timestep_at(0) == Approx(901));  // "leading" spacing, steps_offset 1
      } else {
        FAIL("model_index.json names a class this test does not know: " << cls);
      }
    }
    std::set<std::string> expected = {"scheduler", "unet", "vae"};
    for (const auto& kv : want.text_encoders) expected.insert(kv.first);
    for (const auto& kv : want.pad_token_ids) expected.insert(kv.first);
    CHECK(components == expected);
  }

  // Pipeline-level flags of SDXL's model_index.json.
  CHECK(read_model_index(shipped_family_dir("sdxl-base")).value("force_zeros_for_empty_prompt", false));
  CHECK(read_model_index(shipped_family_dir("sdxl-refiner")).value("requires_aesthetics_score", false));
  CHECK_FALSE(read_model_index(shipped_family_dir("sdxl-refiner")).value("force_zeros_for_empty_prompt", true));
}

TEST_CASE("the shipped CLIP tokenizer gives the published input_ids", "[defaults][clip_tokenizer]") {
  const nlohmann::json ref = read_json_file(std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/clip/reference_ids.json");
  REQUIRE(ref["cases"].size() >= 5);
  // The tokenizer folders of the families hold no vocabulary; the one-folder form says what is missing.
  CHECK(error_text([] { CLIPTokenizer::from_pretrained(shipped_family_dir("sd1") + "/tokenizer"); })
            .find("vocab.json") != std::string::npos);
  CHECK(error_text([] { CLIPTokenizer::from_pretrained(shipped_family_dir("sd1") + "/tokenizer", "/nonexistent"); })
            .find("'/nonexistent'") != std::string::npos);

  for (const std::string family : {"sd1", "sdxl-base"}) {
    INFO("family " << family);
    auto tok = CLIPTokenizer::from_pretrained(shipped_family_dir(family) + "/tokenizer", shipped_clip_vocab_dir());
    for (const auto& c : ref["cases"]) {
      const std::string prompt = c["prompt"].get<std::string>();
      const auto expected = c["input_ids"].get<std::vector<int64_t>>();
      INFO("prompt '" << prompt << "'");
      REQUIRE(expected.size() == 77);
      const CLIPTokenizerOutput out = (*tok)({prompt});
      REQUIRE(out.input_ids.sizes() == at::IntArrayRef({1, 77}));
      const at::Tensor row = out.input_ids[0].contiguous();
      const std::vector<int64_t> got(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 77);
      CHECK(got == expected);
    }
  }

  // SDXL's second tokenizer (and SD 2.x's) pads with "!" (id 0). SD 2.x's published tokenizer_config.json says
  // "<|endoftext|>" while its special_tokens_map.json says "!": transformers takes the map for such a
  // (pre-4.34) config, and so does Tessera.
  for (const std::string folder : {"sdxl-base/tokenizer_2", "sd2-v/tokenizer"}) {
    INFO(folder);
    auto tok = CLIPTokenizer::from_pretrained(shipped_defaults_dir() + "/" + folder, shipped_clip_vocab_dir());
    CHECK(tok->pad_token_id() == 0);
    const CLIPTokenizerOutput out = (*tok)({"a photograph of an astronaut riding a horse"});
    const std::vector<int64_t> head{49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407};
    for (size_t i = 0; i < head.size(); ++i) CHECK(out.input_ids[0][static_cast<int64_t>(i)].item<int64_t>() == head[i]);
    CHECK(out.input_ids[0].slice(0, 10).eq(0).all().item<bool>());
    CHECK(out.attention_mask[0].sum().item<int64_t>() == 10);
    CHECK(tok->encode("wow!") == std::vector<int64_t>{tok->encode("wow")[0], 0});  // "!" is the pad token here
  }
}
