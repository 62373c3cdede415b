// CLIPTextModel / CLIPTextModelWithProjection: parity with transformers on the tiny goldens, loading, registry.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/common/attention_dispatch.h"
#include "models/loading/diffusers_folder.h"
#include "models/register.h"
#include "models/text/clip_text_model.h"
#include "models/text/clip_tokenizer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kParity = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
constexpr double kAtol = 1e-4, kRtol = 1e-4;  // the manifest's tolerance for both text-encoder cases

/// |got - exp| <= atol + rtol*|exp| elementwise; prints the max abs diff.
void check_close(const std::string& name, const at::Tensor& got, const at::Tensor& expected) {
  INFO(name << ": shape " << got.sizes() << " vs " << expected.sizes());
  REQUIRE(got.sizes() == expected.sizes());
  const double max_abs = (got - expected).abs().max().item<double>();
  const bool ok = ((got - expected).abs() <= kAtol + kRtol * expected.abs()).all().item<bool>();
  INFO(name << ": max_abs_diff " << max_abs);
  CHECK(ok);
}

}  // namespace

TEST_CASE("CLIPTextModel matches transformers on tiny_sd_text_encoder", "[model][parity][text_encoder]") {
  c10::InferenceMode guard;
  auto te = load_clip_text_model(kParity + "/models/tiny-sd", "text_encoder");
  CHECK(te->type() == "CLIPTextModel");
  CHECK(te->nbytes() > 0);
  SafetensorsFile f(kParity + "/cases/tiny_sd_text_encoder.safetensors");
  const CLIPTextModelOutput out = te->forward(f.tensor("input_ids"), {}, true);
  REQUIRE(out.hidden_states.size() == 6);  // embeddings + 5 layers
  check_close("last_hidden_state", out.last_hidden_state, f.tensor("last_hidden_state"));
  check_close("pooler_output", out.pooler_output, f.tensor("pooler_output"));
  check_close("hidden_states_penultimate", out.hidden_states[4], f.tensor("hidden_states_penultimate"));
  check_close("hidden_states_embeddings", out.hidden_states[0], f.tensor("hidden_states_embeddings"));
  CHECK(!out.text_embeds.defined());
}

TEST_CASE("CLIPTextModel(+WithProjection) match transformers on tiny_sdxl_text_encoders",
          "[model][parity][text_encoder]") {
  c10::InferenceMode guard;
  auto te1 = load_clip_text_model(kParity + "/models/tiny-sdxl", "text_encoder");
  auto te2 = load_clip_text_model_with_projection(kParity + "/models/tiny-sdxl", "text_encoder_2");
  CHECK(te2->type() == "CLIPTextModelWithProjection");
  SafetensorsFile f(kParity + "/cases/tiny_sdxl_text_encoders.safetensors");
  const CLIPTextModelOutput o1 = te1->forward(f.tensor("input_ids"), {}, true);
  const CLIPTextModelOutput o2 = te2->forward(f.tensor("input_ids_2"), {}, true);
  check_close("te1_last_hidden_state", o1.last_hidden_state, f.tensor("te1_last_hidden_state"));
  check_close("te1_pooler_output", o1.pooler_output, f.tensor("te1_pooler_output"));
  check_close("te1_hidden_states_penultimate", o1.hidden_states.end()[-2], f.tensor("te1_hidden_states_penultimate"));
  check_close("te2_text_embeds", o2.text_embeds, f.tensor("te2_text_embeds"));
  check_close("te2_last_hidden_state", o2.last_hidden_state, f.tensor("te2_last_hidden_state"));
  check_close("te2_hidden_states_penultimate", o2.hidden_states.end()[-2], f.tensor("te2_hidden_states_penultimate"));
}

TEST_CASE("CLIPTextModel is at parity with every attention backend", "[model][parity][text_encoder]") {
  c10::InferenceMode guard;
  auto te = load_clip_text_model(kParity + "/models/tiny-sd", "text_encoder");
  SafetensorsFile f(kParity + "/cases/tiny_sd_text_encoder.safetensors");
  const AttentionBackend before = default_attention_backend();
  const int64_t chunk = attention_chunk_size();
  set_attention_chunk_size(5);  // several chunks over 77 query rows
  for (AttentionBackend b : {AttentionBackend::Math, AttentionBackend::Sdpa, AttentionBackend::Chunked,
                            AttentionBackend::Flash}) {
    INFO("backend " << attention_backend_name(b));
    set_default_attention_backend(b);
    const CLIPTextModelOutput out = te->forward(f.tensor("input_ids"), {}, false);
    check_close("last_hidden_state", out.last_hidden_state, f.tensor("last_hidden_state"));
  }
  set_default_attention_backend(before);
  set_attention_chunk_size(chunk);
}

TEST_CASE("prompts -> CLIPTokenizer -> CLIPTextModel reproduces the text-encoder golden", "[model][parity][text_encoder]") {
  c10::InferenceMode guard;
  std::vector<std::string> prompts;
  const nlohmann::json manifest = read_json_file(kParity + "/manifest.json");
  for (const auto& c : manifest["cases"])
    if (c["name"] == "tiny_sd_tokenizer") prompts = c["params"]["prompts"].get<std::vector<std::string>>();
  REQUIRE(prompts.size() == 8);
  auto tok = CLIPTokenizer::from_pretrained(kParity + "/models/tiny-sd/tokenizer");
  auto te = load_clip_text_model(kParity + "/models/tiny-sd", "text_encoder");
  SafetensorsFile f(kParity + "/cases/tiny_sd_text_encoder.safetensors");
  const CLIPTextModelOutput out = te->forward((*tok)(prompts).input_ids);
  check_close("last_hidden_state", out.last_hidden_state, f.tensor("last_hidden_state"));
  check_close("pooler_output", out.pooler_output, f.tensor("pooler_output"));
}

TEST_CASE("CLIP text model pooling and masks", "[model][text_encoder]") {
  c10::InferenceMode guard;
  CLIPTextConfig cfg;
  cfg.vocab_size(50).hidden_size(8).intermediate_size(12).num_hidden_layers(2).num_attention_heads(2)
      .max_position_embeddings(10).eos_token_id(7).projection_dim(4);
  torch::manual_seed(0);
  CLIPTextModelWithProjection model(cfg);
  model->eval();
  const at::Tensor ids = at::tensor({3, 9, 7, 1, 7, 1, 1, 1, 1, 1, 4, 7, 40, 40, 40, 40, 40, 40, 40, 40}, at::kLong)
                             .view({2, 10});
  const CLIPTextModelOutput out = model(ids, at::Tensor(), false);
  CHECK(out.hidden_states.empty());
  // eos_token_id != 2: first position of eos (2 and 1), not argmax.
  CHECK(at::allclose(out.pooler_output[0], out.last_hidden_state[0][2]));
  CHECK(at::allclose(out.pooler_output[1], out.last_hidden_state[1][1]));
  CHECK(out.text_embeds.sizes() == at::IntArrayRef({2, 4}));
  // Causal: changing a later token leaves earlier positions unchanged.
  at::Tensor ids2 = ids.clone();
  ids2[0][5] = 30;
  const CLIPTextModelOutput out2 = model(ids2, at::Tensor(), false);
  CHECK(at::allclose(out.last_hidden_state.slice(1, 0, 5), out2.last_hidden_state.slice(1, 0, 5)));
  CHECK(!at::allclose(out.last_hidden_state, out2.last_hidden_state));
  // A padding mask hides masked keys: masked tokens stop mattering for the others.
  const at::Tensor mask = at::tensor({1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 10});
  ids2 = ids.clone();
  ids2[0][4] = 30;
  const auto m1 = model(ids, mask, false), m2 = model(ids2, mask, false);
  CHECK(at::allclose(m1.last_hidden_state[0][9], m2.last_hidden_state[0][9]));
  CHECK(!m1.last_hidden_state.isnan().any().item<bool>());
  // Legacy pooling (eos_token_id 2): argmax of the ids.
  cfg.eos_token_id(2);
  CLIPTextModel legacy(cfg);
  legacy->eval();
  const auto lo = legacy(ids, at::Tensor(), false);
  CHECK(at::allclose(lo.pooler_output[0], lo.last_hidden_state[0][1]));  // id 9 is the largest in row 0
  CHECK(at::allclose(lo.pooler_output[1], lo.last_hidden_state[1][2]));  // first 40
  // Bad inputs are clear errors.
  CHECK_THROWS(legacy(at::zeros({1, 11}, at::kLong), at::Tensor(), false));
  CHECK_THROWS(legacy(at::full({1, 3}, 50, at::kLong), at::Tensor(), false));
  CHECK_THROWS(legacy(at::zeros({3}, at::kLong), at::Tensor(), false));
}

TEST_CASE("CLIP text models load strictly and register as components", "[model][text_encoder]") {
  Registry registry;
  register_builtin_models(registry);
  const auto* tok_type = registry.find_component_type("CLIPTokenizer");
  REQUIRE(tok_type);
  CHECK(tok_type->category == ComponentCategory::Tokenizer);
  REQUIRE(registry.find_component_type("CLIPTextModel"));
  REQUIRE(registry.find_component_type("CLIPTextModelWithProjection"));

  ComponentSpec spec;
  spec.name = "text_encoder_2";
  spec.type = "CLIPTextModelWithProjection";
  spec.from = kParity + "/models/tiny-sdxl";
  spec.subfolder = "text_encoder_2";
  auto te2 = std::dynamic_pointer_cast<CLIPTextModelWithProjectionImpl>(registry.create_component(spec));
  REQUIRE(te2);
  spec.name = "tokenizer_2";
  spec.type = "CLIPTokenizer";
  spec.subfolder = "tokenizer_2";
  auto tok2 = std::dynamic_pointer_cast<CLIPTokenizer>(registry.create_component(spec));
  REQUIRE(tok2);
  CHECK(tok2->pad_token_id() == 0);

  // The tiny-sdxl text_encoder_2 weights do not fit a CLIPTextModel (no text_projection): strict loading says so.
  spec.type = "CLIPTextModel";
  spec.subfolder = "text_encoder_2";
  try {
    registry.create_component(spec);
    FAIL("no ModelLoadError");
  } catch (const ModelLoadError& e) {
    CHECK(std::string(e.what()).find("text_projection") != std::string::npos);
  }
  // Missing folder.
  CHECK_THROWS_AS(load_clip_text_model(kParity + "/models/tiny-sd", "no_such_encoder"), ModelLoadError);
}
