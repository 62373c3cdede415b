// SD3Transformer2DModel (+ PatchEmbed, JointTransformerBlock): config defaults and refusals, from_config shapes,
// the position table, strict loading, the tiny_sd3 / tiny_sd3_5 goldens, skip_layers and layer hooks per slice.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <random>
#include <sstream>
#include <string>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/common/patch_embed.h"
#include "models/loading/config_reader.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/transformers/joint_transformer_block.h"
#include "models/transformers/transformer_sd3.h"
#include "tools/parity/parity.h"
#include "tools/parity/sd3_cases.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
const std::string kTinySd3 = kFixtures + "/models/tiny-sd3";
const std::string kTinySd35 = kFixtures + "/models/tiny-sd35";

Registry& models_registry() {
  static Registry registry = [] {
    Registry r;
    register_builtin_models(r);
    return r;
  }();
  return registry;
}

// A fresh temporary folder, removed at the end of the scope.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::mt19937_64 rng(std::random_device{}());
    path = fs::temp_directory_path() / ("tessera_sd3_" + std::to_string(rng()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Golden inputs of a case file.
struct CaseInputs {
  at::Tensor hidden_states, encoder_hidden_states, pooled_projections, timestep;
};
CaseInputs case_inputs(const SafetensorsFile& f) {
  return {f.tensor("hidden_states").clone(), f.tensor("encoder_hidden_states").clone(),
          f.tensor("pooled_projections").clone(), f.tensor("timestep").clone()};
}

nlohmann::json small_config() {
  return {{"sample_size", 16},         {"patch_size", 2},           {"in_channels", 4},
          {"num_layers", 3},           {"attention_head_dim", 8},   {"num_attention_heads", 2},
          {"joint_attention_dim", 12}, {"caption_projection_dim", 16}, {"pooled_projection_dim", 10},
          {"out_channels", 6},         {"pos_embed_max_size", 12}};
}

}  // namespace

TEST_CASE("SD3Transformer2DModel config: diffusers' defaults, SD3.5 fields, refusals by name", "[model][sd3]") {
  auto d = SD3Transformer2DModelConfig::from_json(nlohmann::json::object());
  CHECK(d.sample_size == 128);
  CHECK(d.patch_size == 2);
  CHECK(d.in_channels == 16);
  CHECK(d.num_layers == 18);
  CHECK(d.attention_head_dim == 64);
  CHECK(d.num_attention_heads == 18);
  CHECK(d.joint_attention_dim == 4096);
  CHECK(d.caption_projection_dim == 1152);
  CHECK(d.pooled_projection_dim == 2048);
  CHECK(d.out_channels == 16);
  CHECK(d.pos_embed_max_size == 96);
  CHECK(d.dual_attention_layers.empty());
  CHECK_FALSE(d.qk_norm.has_value());
  CHECK(d.inner_dim() == 1152);

  ModelConfig folder = ModelConfig::from_folder(kTinySd35, "transformer");
  auto s35 = SD3Transformer2DModelConfig::from_config(folder);
  CHECK(s35.dual_attention_layers == std::vector<int64_t>{0});
  CHECK(s35.qk_norm == std::optional<std::string>("rms_norm"));
  CHECK(s35.joint_attention_dim == 96);
  CHECK(s35.pooled_projection_dim == 80);

  nlohmann::json j = small_config();
  j["out_channels"] = nullptr;  // diffusers: None → in_channels
  CHECK(SD3Transformer2DModelConfig::from_json(j).out_channels == 4);

  auto refused = [](const char* field, nlohmann::json value) {
    nlohmann::json bad = small_config();
    bad[field] = std::move(value);
    CHECK_THROWS_WITH(SD3Transformer2DModelConfig::from_json(bad, "transformer/config.json"),
                      Catch::Contains(field) && Catch::Contains("transformer/config.json"));
    CHECK_THROWS_AS(SD3Transformer2DModelConfig::from_json(bad), ModelLoadError);
  };
  refused("qk_norm", "layer_norm");
  refused("qk_norm", "rms_norm_across_heads");
  refused("caption_projection_dim", 24);  // != heads * head_dim (16)
  refused("pos_embed_max_size", nullptr);
  refused("dual_attention_layers", {0, 3});  // num_layers 3
  refused("num_layers", "2");
  refused("patch_size", 0);
  nlohmann::json odd = small_config();  // inner dim 2 * 3 = 6: not a multiple of 4 (the 2-D sin-cos table)
  odd["attention_head_dim"] = 3;
  odd["caption_projection_dim"] = 6;
  CHECK_THROWS_WITH(SD3Transformer2DModelConfig::from_json(odd), Catch::Contains("attention_head_dim"));
  odd["attention_head_dim"] = 4;
  odd["caption_projection_dim"] = 8;
  CHECK(SD3Transformer2DModelConfig::from_json(odd).inner_dim() == 8);
}

TEST_CASE("SD3Transformer2DModel from_config: modules, keys and output shapes", "[model][sd3]") {
  c10::InferenceMode guard;
  ComponentSpec spec;
  spec.name = "transformer";
  spec.type = "SD3Transformer2DModel";
  spec.creation = Creation::FromConfig;
  spec.config = Value(ValueMap{{"sample_size", Value(16)},
                               {"patch_size", Value(2)},
                               {"in_channels", Value(4)},
                               {"num_layers", Value(3)},
                               {"attention_head_dim", Value(8)},
                               {"num_attention_heads", Value(2)},
                               {"joint_attention_dim", Value(12)},
                               {"caption_projection_dim", Value(16)},
                               {"pooled_projection_dim", Value(10)},
                               {"out_channels", Value(6)},
                               {"pos_embed_max_size", Value(12)},
                               {"dual_attention_layers", Value(std::vector<int64_t>{1})},
                               {"qk_norm", Value("rms_norm")}});
  auto model = std::dynamic_pointer_cast<SD3Transformer2DModelImpl>(models_registry().create_component(spec));
  REQUIRE(model);
  CHECK(model->type() == "SD3Transformer2DModel");
  CHECK((model->hook_stacks() == std::vector<std::pair<std::string, int64_t>>{{"transformer_blocks", 3}}));
  const auto params = model->named_parameters();
  const auto buffers = model->named_buffers();
  CHECK(buffers.contains("pos_embed.pos_embed"));
  CHECK((buffers["pos_embed.pos_embed"].sizes() == at::IntArrayRef{1, 144, 16}));
  CHECK(params.contains("transformer_blocks.1.attn2.norm_q.weight"));
  CHECK_FALSE(params.contains("transformer_blocks.0.attn2.to_q.weight"));
  CHECK(params.contains("transformer_blocks.1.norm1.linear.weight"));
  CHECK(params["transformer_blocks.1.norm1.linear.weight"].size(0) == 9 * 16);  // SD35AdaLayerNormZeroX
  CHECK(params["transformer_blocks.0.norm1.linear.weight"].size(0) == 6 * 16);
  // The last block is context_pre_only: AdaLayerNormContinuous context norm, no to_add_out, no ff_context.
  CHECK(params["transformer_blocks.2.norm1_context.linear.weight"].size(0) == 2 * 16);
  CHECK(params.contains("transformer_blocks.2.attn.add_q_proj.weight"));
  CHECK_FALSE(params.contains("transformer_blocks.2.attn.to_add_out.weight"));
  CHECK_FALSE(params.contains("transformer_blocks.2.ff_context.net.0.proj.weight"));
  CHECK(params.contains("transformer_blocks.1.attn.to_add_out.weight"));
  CHECK(params.contains("transformer_blocks.1.attn.norm_added_k.weight"));
  CHECK((params["proj_out.weight"].sizes() == at::IntArrayRef{2 * 2 * 6, 16}));

  // Non-square latents, scalar and per-batch timesteps.
  const at::Tensor ehs = at::randn({3, 5, 12}), pooled = at::randn({3, 10});
  at::Tensor out = model->forward(at::randn({3, 4, 8, 14}), ehs, pooled, at::scalar_tensor(500.0));
  CHECK((out.sizes() == at::IntArrayRef{3, 6, 8, 14}));
  CHECK(out.scalar_type() == at::kFloat);
  CHECK(at::isfinite(out).all().item<bool>());
  out = model->forward(at::randn({3, 4, 24, 2}), ehs, pooled, at::tensor({1.0f, 500.0f, 999.0f}));
  CHECK((out.sizes() == at::IntArrayRef{3, 6, 24, 2}));

  // Shape errors are InputErrors naming what was expected.
  CHECK_THROWS_WITH(model->forward(at::randn({3, 4, 7, 8}), ehs, pooled, at::scalar_tensor(1.0)),
                    Catch::Contains("multiples of patch_size 2"));
  CHECK_THROWS_AS(model->forward(at::randn({3, 5, 8, 8}), ehs, pooled, at::scalar_tensor(1.0)), InputError);
  CHECK_THROWS_AS(model->forward(at::randn({3, 4, 8, 8}), at::randn({3, 5, 11}), pooled, at::scalar_tensor(1.0)),
                  InputError);
  CHECK_THROWS_AS(model->forward(at::randn({3, 4, 8, 8}), ehs, at::randn({2, 10}), at::scalar_tensor(1.0)),
                  InputError);
  CHECK_THROWS_AS(model->forward(at::randn({3, 4, 8, 8}), ehs, pooled, at::ones({2})), InputError);
  SD3TransformerInputs bad_skip;
  bad_skip.skip_layers = {3};
  CHECK_THROWS_AS(model->forward(at::randn({3, 4, 8, 8}), ehs, pooled, at::scalar_tensor(1.0), bad_skip), InputError);
}

TEST_CASE("PatchEmbed: a patch grid larger than pos_embed_max_size is an InputError naming the sizes", "[model][sd3]") {
  c10::InferenceMode guard;
  PatchEmbed pe(PatchEmbedOptions().height(16).width(16).patch_size(2).in_channels(4).embed_dim(16).pos_embed_max_size(12));
  CHECK((pe->forward(at::randn({1, 4, 24, 24})).sizes() == at::IntArrayRef{1, 144, 16}));
  CHECK_THROWS_AS(pe->forward(at::randn({1, 4, 26, 8})), InputError);
  CHECK_THROWS_WITH(pe->forward(at::randn({1, 4, 8, 26})),
                    Catch::Contains("4x13") && Catch::Contains("pos_embed_max_size 12"));
  // The crop is centered: top = (M - h) // 2, left = (M - w) // 2.
  const at::Tensor table = pe->pos_embed.reshape({12, 12, 16});
  const at::Tensor crop = pe->cropped_pos_embed(6, 10).reshape({3, 5, 16});  // h 3, w 5 → top 4, left 3
  CHECK(at::equal(crop, table.narrow(0, 4, 3).narrow(1, 3, 5)));
  // pos_embed_type null (SD3 ControlNet's pos_embed_input): no table at all.
  PatchEmbed plain(PatchEmbedOptions().patch_size(2).in_channels(4).embed_dim(16).pos_embed_type(std::nullopt));
  CHECK(plain->named_buffers().is_empty());
  CHECK((plain->forward(at::randn({1, 4, 64, 2})).sizes() == at::IntArrayRef{1, 32, 16}));
  CHECK_THROWS_AS(PatchEmbed(PatchEmbedOptions().embed_dim(16)), ModelLoadError);  // sincos without max size
}

TEST_CASE("get_2d_sincos_pos_embed reproduces the position tables diffusers saved in tiny-sd3 and tiny-sd35",
          "[model][sd3]") {
  for (const std::string& folder : {kTinySd3, kTinySd35}) {
    auto tensors = read_safetensors_files({folder + "/transformer/diffusion_pytorch_model.safetensors"});
    REQUIRE(tensors.count("pos_embed.pos_embed"));
    // sample_size 32, patch_size 2 → base_size 16; pos_embed_max_size 32; inner_dim 32.
    const at::Tensor mine = get_2d_sincos_pos_embed(32, 32, 32, 16.0).unsqueeze(0);
    const at::Tensor saved = tensors["pos_embed.pos_embed"];
    REQUIRE(mine.sizes() == saved.sizes());
    INFO(folder << ": max diff " << (mine - saved).abs().max().item<double>());
    CHECK(at::allclose(mine, saved, 0.0, 1e-6));
  }
}

TEST_CASE("SD3Transformer2DModel: a tampered checkpoint is a ModelLoadError naming the tensor", "[model][sd3]") {
  TempDir dir;
  fs::create_directories(dir.path / "transformer");
  fs::copy_file(kTinySd35 + "/transformer/config.json", dir.path / "transformer/config.json");
  auto tensors = read_safetensors_files({kTinySd35 + "/transformer/diffusion_pytorch_model.safetensors"});
  const std::string key = "transformer_blocks.0.attn2.norm_q.weight";
  REQUIRE(tensors.count(key));
  auto missing = tensors;
  missing.erase(key);
  save_safetensors((dir.path / "transformer/diffusion_pytorch_model.safetensors").string(), missing);
  CHECK_THROWS_WITH(SD3Transformer2DModelImpl::from_pretrained(dir.path.string(), "transformer"), Catch::Contains(key));
  auto reshaped = tensors;
  reshaped["pos_embed.pos_embed"] = reshaped["pos_embed.pos_embed"].narrow(1, 0, 900);
  save_safetensors((dir.path / "transformer/diffusion_pytorch_model.safetensors").string(), reshaped);
  CHECK_THROWS_AS(SD3Transformer2DModelImpl::from_pretrained(dir.path.string(), "transformer"), ModelLoadError);
  CHECK_THROWS_WITH(SD3Transformer2DModelImpl::from_pretrained(dir.path.string(), "transformer"),
                    Catch::Contains("pos_embed.pos_embed") && Catch::Contains("900"));
  // A checkpoint without dual attention loaded with an SD3.5 config lacks attn2 and the qk norms.
  save_safetensors((dir.path / "transformer/diffusion_pytorch_model.safetensors").string(),
                   read_safetensors_files({kTinySd3 + "/transformer/diffusion_pytorch_model.safetensors"}));
  CHECK_THROWS_WITH(SD3Transformer2DModelImpl::from_pretrained(dir.path.string(), "transformer", "",
                                                               nlohmann::json{{"joint_attention_dim", 32},
                                                                              {"pooled_projection_dim", 64}}),
                    Catch::Contains("attn2") || Catch::Contains("norm_q"));
}

TEST_CASE("tiny_sd3_transformer and tiny_sd3_5_transformer golden cases pass", "[parity][model][sd3]") {
  register_sd3_case_runner();
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kFixtures + "/manifest_dit.json";
  o.filter_regex = "sd3.*_transformer";
  o.verbose = true;
  const int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);
  CHECK(out.str().find("PASS tiny_sd3_transformer ") != std::string::npos);
  CHECK(out.str().find("PASS tiny_sd3_5_transformer ") != std::string::npos);
  CHECK(out.str().find("2 passed, 0 failed") != std::string::npos);
}

TEST_CASE("a SkipBlock hook on one batch row equals skip_layers on that row; the other row is bit-identical",
          "[model][sd3]") {
  c10::InferenceMode guard;
  for (const std::string& folder : {kTinySd3, kTinySd35}) {
    auto model = SD3Transformer2DModelImpl::from_pretrained(folder, "transformer");
    SafetensorsFile f(kFixtures + (folder == kTinySd3 ? "/cases/tiny_sd3_transformer.safetensors"
                                                      : "/cases/tiny_sd3_5_transformer.safetensors"));
    const CaseInputs in = case_inputs(f);
    const at::Tensor plain = model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
    SD3TransformerInputs skip;
    skip.skip_layers = {0};
    const at::Tensor skipped =
        model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, skip);

    for (const char* fqn : {"transformer_blocks", "auto"}) {
      SD3TransformerInputs hooked_in;
      LayerHook h{LayerHookKind::SkipBlock, {{0}, fqn}};
      h.batch_start = 1;
      h.batch_size = 1;
      hooked_in.hooks = {h};
      const at::Tensor hooked =
          model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, hooked_in);
      INFO(folder << " fqn " << fqn);
      CHECK(at::equal(hooked[0], plain[0]));
      CHECK(at::equal(hooked[1], skipped[1]));
      CHECK_FALSE(at::allclose(hooked[1], plain[1]));
    }
    // Skipping the last (context_pre_only) block works too and differs from the plain output.
    SD3TransformerInputs last;
    LayerHook h{LayerHookKind::SkipBlock, {{1}, "transformer_blocks"}};
    h.batch_start = 0;
    h.batch_size = 1;
    last.hooks = {h};
    const at::Tensor hooked_last =
        model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, last);
    skip.skip_layers = {1};
    const at::Tensor skipped_last =
        model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, skip);
    CHECK(at::equal(hooked_last[0], skipped_last[0]));
    CHECK(at::equal(hooked_last[1], plain[1]));
  }
}

TEST_CASE("attention and feed-forward hooks change only their slice; unsupported hooks are refused",
          "[model][sd3]") {
  c10::InferenceMode guard;
  auto model = SD3Transformer2DModelImpl::from_pretrained(kTinySd35, "transformer");
  SafetensorsFile f(kFixtures + "/cases/tiny_sd3_5_transformer.safetensors");
  const CaseInputs in = case_inputs(f);
  auto run = [&](const SD3TransformerInputs& x) {
    return model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, x);
  };
  const at::Tensor plain = run({});
  at::Tensor previous;
  for (LayerHookKind kind : {LayerHookKind::IdentityAttention, LayerHookKind::SkipAttention,
                             LayerHookKind::SkipFeedForward}) {
    SD3TransformerInputs x;
    LayerHook h{kind, {{0}, "auto"}};
    h.batch_start = 0;
    h.batch_size = 1;
    x.hooks = {h};
    const at::Tensor hooked = run(x);
    INFO(layer_hook_kind_name(kind));
    CHECK(at::equal(hooked[1], plain[1]));
    CHECK_FALSE(at::allclose(hooked[0], plain[0]));
    if (previous.defined()) CHECK_FALSE(at::allclose(hooked[0], previous[0]));
    previous = hooked;
  }
  SD3TransformerInputs bad;
  bad.hooks = {LayerHook{LayerHookKind::SmoothedEnergyBlur, {{0}, "auto"}}};
  CHECK_THROWS_WITH(run(bad), Catch::Contains("smoothed_energy_blur"));
  bad.hooks = {LayerHook{LayerHookKind::SkipBlock, {{0}, "mid_block.attentions.0.transformer_blocks"}}};
  CHECK_THROWS_AS(run(bad), ValidationError);
  bad.hooks = {LayerHook{LayerHookKind::SkipBlock, {{2}, "auto"}}};
  CHECK_THROWS_AS(run(bad), ValidationError);

  // The joint attention modules can be swapped by name: attn in both blocks, attn2 in the dual block.
  CHECK(model->set_attn_processor("\\.attn2?$", [] { return std::make_shared<JointAttnProcessor2_0>(); }) == 3);
  CHECK(at::equal(run({}), plain));
}

TEST_CASE("controlnet residuals of zero leave the output unchanged; others change it", "[model][sd3]") {
  c10::InferenceMode guard;
  auto model = SD3Transformer2DModelImpl::from_pretrained(kTinySd3, "transformer");
  SafetensorsFile f(kFixtures + "/cases/tiny_sd3_transformer.safetensors");
  const CaseInputs in = case_inputs(f);
  const at::Tensor plain = model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
  SD3TransformerInputs x;
  x.block_controlnet_hidden_states = {at::zeros({2, 96, 32})};
  CHECK(at::equal(model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, x),
                  plain));
  x.block_controlnet_hidden_states = {at::full({2, 96, 32}, 0.1)};
  CHECK_FALSE(at::allclose(
      model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, x), plain));
  x.block_controlnet_hidden_states = {at::zeros({2, 95, 32})};
  CHECK_THROWS_AS(model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep, x),
                  InputError);
}

TEST_CASE("bf16 tiny SD3 / SD3.5 transformers agree with the float32 goldens (cos > 0.999)", "[model][bf16][sd3]") {
  c10::InferenceMode guard;
  for (const char* name : {"tiny-sd3", "tiny-sd35"}) {
    ComponentSpec spec;
    spec.name = "transformer";
    spec.type = "SD3Transformer2DModel";
    spec.from = kFixtures + "/models/" + name;
    spec.subfolder = "transformer";
    spec.dtype = "bf16";
    auto model = std::dynamic_pointer_cast<SD3Transformer2DModelImpl>(models_registry().create_component(spec));
    REQUIRE(model);
    CHECK(model->dtype() == at::kBFloat16);
    SafetensorsFile f(kFixtures + (name == std::string("tiny-sd3") ? "/cases/tiny_sd3_transformer.safetensors"
                                                                   : "/cases/tiny_sd3_5_transformer.safetensors"));
    const CaseInputs in = case_inputs(f);
    const at::Tensor out = model->forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
    REQUIRE(out.scalar_type() == at::kFloat);
    const at::Tensor expected = f.tensor("sample");
    const double cos =
        at::cosine_similarity(out.flatten().to(at::kDouble), expected.flatten().to(at::kDouble), 0).item<double>();
    INFO(name << ": cos=" << cos);
    CHECK(cos > 0.999);
  }
}
