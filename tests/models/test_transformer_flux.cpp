// FluxTransformer2DModel: config defaults and refusals, from_config forward shapes (guidance on/off), input
// errors, strict loading, the component goldens (tiny_flux_transformer, tiny_flux_dev_transformer, and the
// shift_factor VAE cases), layer hooks per batch slice, and bf16 against the float32 goldens by cosine.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/transformers/transformer_flux.h"
#include "tools/parity/flux_cases.h"
#include "tools/parity/parity.h"
#include "tools/parity/vae_cases.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {
const std::string kFixtures = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
const std::string kTinyFlux = kFixtures + "/models/tiny-flux";
const std::string kTinyFluxDev = kFixtures + "/models/tiny-flux-dev";

nlohmann::json tiny_config(bool guidance) {
  return {{"patch_size", 1},           {"in_channels", 8},         {"num_layers", 2},
          {"num_single_layers", 2},    {"attention_head_dim", 8},  {"num_attention_heads", 2},
          {"joint_attention_dim", 12}, {"pooled_projection_dim", 6}, {"guidance_embeds", guidance},
          {"axes_dims_rope", {2, 2, 4}}};
}

std::shared_ptr<FluxTransformer2DModelImpl> random_model(const nlohmann::json& config) {
  torch::manual_seed(0);
  auto m = std::make_shared<FluxTransformer2DModelImpl>(FluxTransformer2DModelConfig::from_json(config));
  m->eval();
  return m;
}

struct Inputs {
  at::Tensor hidden, encoder, pooled, timestep, img_ids, txt_ids, guidance;
};

Inputs make_inputs(int64_t batch, int64_t s_img, int64_t s_txt, int64_t in_ch = 8, int64_t joint = 12,
                   int64_t pooled = 6) {
  torch::manual_seed(1);
  Inputs in;
  in.hidden = torch::randn({batch, s_img, in_ch});
  in.encoder = torch::randn({batch, s_txt, joint});
  in.pooled = torch::randn({batch, pooled});
  in.timestep = torch::rand({batch});
  in.img_ids = torch::stack({torch::zeros({s_img}), torch::arange(s_img).div(4, "floor"), torch::arange(s_img) % 4}, 1)
                   .to(torch::kFloat);
  in.txt_ids = torch::zeros({s_txt, 3});
  in.guidance = torch::full({batch}, 3.5);
  return in;
}

fs::path fresh_temp_dir(const std::string& tag) {
  static std::mt19937_64 rng(std::random_device{}());
  fs::path dir = fs::temp_directory_path() / ("tessera_" + tag + "_" + std::to_string(rng()));
  fs::create_directories(dir);
  return dir;
}
}  // namespace

TEST_CASE("FluxTransformer2DModelConfig: diffusers defaults, overrides and refusals by name", "[model][flux]") {
  auto d = FluxTransformer2DModelConfig::from_json(nlohmann::json::object());
  CHECK(d.patch_size == 1);
  CHECK(d.in_channels == 64);
  CHECK_FALSE(d.out_channels.has_value());
  CHECK(d.resolved_out_channels() == 64);
  CHECK(d.num_layers == 19);
  CHECK(d.num_single_layers == 38);
  CHECK(d.attention_head_dim == 128);
  CHECK(d.num_attention_heads == 24);
  CHECK(d.inner_dim() == 3072);
  CHECK(d.joint_attention_dim == 4096);
  CHECK(d.pooled_projection_dim == 768);
  CHECK_FALSE(d.guidance_embeds);
  CHECK((d.axes_dims_rope == std::vector<int64_t>{16, 56, 56}));

  auto t = FluxTransformer2DModelConfig::from_json(tiny_config(true));
  CHECK(t.guidance_embeds);
  CHECK(t.in_channels == 8);
  auto with_out = tiny_config(false);
  with_out["out_channels"] = 3;
  CHECK(FluxTransformer2DModelConfig::from_json(with_out).resolved_out_channels() == 3);

  auto bad_rope = tiny_config(false);
  bad_rope["axes_dims_rope"] = {2, 2, 2};
  CHECK_THROWS_WITH(FluxTransformer2DModelConfig::from_json(bad_rope),
                    Catch::Contains("axes_dims_rope") && Catch::Contains("attention_head_dim"));
  auto odd_rope = tiny_config(false);
  odd_rope["axes_dims_rope"] = {3, 1, 4};
  CHECK_THROWS_AS(FluxTransformer2DModelConfig::from_json(odd_rope), ModelLoadError);
  auto zero_heads = tiny_config(false);
  zero_heads["num_attention_heads"] = 0;
  CHECK_THROWS_WITH(FluxTransformer2DModelConfig::from_json(zero_heads), Catch::Contains("num_attention_heads"));
  auto wrong_type = tiny_config(false);
  wrong_type["guidance_embeds"] = "yes";
  CHECK_THROWS_AS(FluxTransformer2DModelConfig::from_json(wrong_type), ModelLoadError);
}

TEST_CASE("FluxTransformer2DModel from_config: keys, shapes with and without guidance", "[model][flux]") {
  c10::InferenceMode guard;
  Registry registry;
  register_builtin_models(registry);
  for (bool guidance : {false, true}) {
    ComponentSpec spec;
    spec.name = "transformer";
    spec.type = "FluxTransformer2DModel";
    spec.creation = Creation::FromConfig;
    ValueMap cfg;
    cfg["in_channels"] = Value(int64_t{8});
    cfg["num_layers"] = Value(int64_t{1});
    cfg["num_single_layers"] = Value(int64_t{1});
    cfg["attention_head_dim"] = Value(int64_t{8});
    cfg["num_attention_heads"] = Value(int64_t{2});
    cfg["joint_attention_dim"] = Value(int64_t{12});
    cfg["pooled_projection_dim"] = Value(int64_t{6});
    cfg["guidance_embeds"] = Value(guidance);
    cfg["axes_dims_rope"] = Value(std::vector<int64_t>{2, 2, 4});
    spec.config = Value(cfg);
    auto model = std::dynamic_pointer_cast<FluxTransformer2DModelImpl>(registry.create_component(spec));
    REQUIRE(model);
    CHECK(model->type() == "FluxTransformer2DModel");
    auto params = model->named_parameters();
    for (const char* k : {"time_text_embed.timestep_embedder.linear_1.weight", "time_text_embed.text_embedder.linear_2.bias",
                          "context_embedder.weight", "x_embedder.weight", "transformer_blocks.0.norm1.linear.weight",
                          "transformer_blocks.0.norm1_context.linear.weight", "transformer_blocks.0.attn.norm_q.weight",
                          "transformer_blocks.0.attn.norm_added_k.weight", "transformer_blocks.0.attn.add_v_proj.bias",
                          "transformer_blocks.0.attn.to_out.0.weight", "transformer_blocks.0.attn.to_add_out.weight",
                          "transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff_context.net.2.weight",
                          "single_transformer_blocks.0.norm.linear.weight", "single_transformer_blocks.0.proj_mlp.weight",
                          "single_transformer_blocks.0.proj_out.weight", "single_transformer_blocks.0.attn.to_q.bias",
                          "norm_out.linear.weight", "proj_out.bias"})
      CHECK(params.contains(k));
    CHECK(params.contains("time_text_embed.guidance_embedder.linear_1.weight") == guidance);
    CHECK_FALSE(params.contains("single_transformer_blocks.0.attn.to_out.0.weight"));  // pre_only
    CHECK(params["single_transformer_blocks.0.proj_out.weight"].sizes() == at::IntArrayRef({16, 16 + 64}));
    Inputs in = make_inputs(2, 12, 5);
    at::Tensor out = model->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids,
                                    guidance ? in.guidance : at::Tensor());
    CHECK(out.sizes() == at::IntArrayRef({2, 12, 8}));
    CHECK(out.scalar_type() == torch::kFloat);
    CHECK(torch::isfinite(out).all().item<bool>());
  }
  // patch_size and out_channels set the output width p²·out.
  auto cfg = tiny_config(false);
  cfg["patch_size"] = 2;
  cfg["out_channels"] = 3;
  auto m = random_model(cfg);
  Inputs in = make_inputs(1, 6, 4);
  CHECK(m->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids).sizes() ==
        at::IntArrayRef({1, 6, 12}));
}

TEST_CASE("FluxTransformer2DModel: bad inputs are InputErrors naming the tensor", "[model][flux]") {
  c10::InferenceMode guard;
  auto schnell = random_model(tiny_config(false));
  auto dev = random_model(tiny_config(true));
  Inputs in = make_inputs(2, 12, 5);
  auto run = [&](FluxTransformer2DModelImpl& m, const Inputs& x) {
    return m.forward(x.hidden, x.encoder, x.pooled, x.timestep, x.img_ids, x.txt_ids, x.guidance);
  };
  Inputs no_guidance = in;
  no_guidance.guidance = at::Tensor();
  CHECK_NOTHROW(run(*schnell, no_guidance));
  CHECK_THROWS_WITH(run(*schnell, in), Catch::Contains("guidance") && Catch::Contains("guidance_embeds false"));
  CHECK_THROWS_AS(run(*dev, no_guidance), InputError);
  CHECK_THROWS_WITH(run(*dev, no_guidance), Catch::Contains("guidance"));
  CHECK_NOTHROW(run(*dev, in));

  Inputs x = no_guidance;
  x.hidden = torch::randn({2, 12, 7});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("hidden_states") && Catch::Contains("8"));
  x = no_guidance;
  x.img_ids = torch::zeros({11, 3});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("img_ids") && Catch::Contains("S_img = 12"));
  x = no_guidance;
  x.txt_ids = torch::zeros({5, 2});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("txt_ids"));
  x = no_guidance;
  x.encoder = torch::randn({2, 5, 11});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("encoder_hidden_states"));
  x = no_guidance;
  x.pooled = torch::randn({1, 6});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("pooled_projections"));
  x = no_guidance;
  x.timestep = torch::rand({3});
  CHECK_THROWS_WITH(run(*schnell, x), Catch::Contains("timestep"));
  x = no_guidance;
  x.timestep = torch::rand({1});  // one value for every row is accepted
  CHECK_NOTHROW(run(*schnell, x));

  FluxTransformerInputs hooks;
  hooks.hooks.push_back(LayerHook{LayerHookKind::SkipBlock, {{0}, "blocks"}});
  CHECK_THROWS_WITH(schnell->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids, {}, hooks),
                    Catch::Contains("'blocks'"));
  hooks.hooks[0].layers = {{2}, "single_transformer_blocks"};
  CHECK_THROWS_AS(schnell->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids, {}, hooks),
                  ValidationError);
  CHECK((schnell->hook_stacks() ==
         std::vector<std::pair<std::string, int64_t>>{{"transformer_blocks", 2}, {"single_transformer_blocks", 2}}));
}

TEST_CASE("FluxTransformer2DModel loads strictly: a renamed tensor is a ModelLoadError naming both keys",
          "[model][flux]") {
  auto model = FluxTransformer2DModelImpl::from_pretrained(kTinyFlux, "transformer");
  CHECK(model->nbytes() > 100000);
  CHECK_FALSE(model->config.guidance_embeds);
  CHECK(FluxTransformer2DModelImpl::from_pretrained(kTinyFluxDev)->config.guidance_embeds);

  fs::path dir = fresh_temp_dir("flux");
  fs::create_directories(dir / "transformer");
  fs::copy_file(kTinyFlux + "/transformer/config.json", dir / "transformer/config.json");
  auto tensors = read_safetensors_files({kTinyFlux + "/transformer/diffusion_pytorch_model.safetensors"});
  const std::string key = "transformer_blocks.0.attn.norm_added_q.weight";
  REQUIRE(tensors.count(key));
  tensors["transformer_blocks.0.attn.norm_added_q.scale"] = tensors[key];
  tensors.erase(key);
  save_safetensors((dir / "transformer/diffusion_pytorch_model.safetensors").string(), tensors);
  CHECK_THROWS_AS(FluxTransformer2DModelImpl::from_pretrained(dir.string(), "transformer"), ModelLoadError);
  CHECK_THROWS_WITH(FluxTransformer2DModelImpl::from_pretrained(dir.string(), "transformer"),
                    Catch::Contains(key) && Catch::Contains("norm_added_q.scale"));
  fs::remove_all(dir);
}

TEST_CASE("tiny_flux_transformer, tiny_flux_dev_transformer and the shift_factor VAE goldens pass",
          "[parity][model][flux]") {
  register_flux_case_runner();
  register_vae_case_runner();
  std::ostringstream out;
  ParityOptions o;
  o.manifest = kFixtures + "/manifest_dit.json";
  o.filter_regex = "^(tiny_flux_transformer|tiny_flux_dev_transformer|tiny_flux_vae|tiny_sd3_vae)$";
  o.verbose = true;
  int rc = run_parity(o, out);
  INFO(out.str());
  CHECK(rc == 0);
  for (const char* name : {"tiny_flux_transformer", "tiny_flux_dev_transformer", "tiny_flux_vae", "tiny_sd3_vae"})
    CHECK(out.str().find(std::string("PASS ") + name + " ") != std::string::npos);
  CHECK(out.str().find("4 passed, 0 failed") != std::string::npos);
}

TEST_CASE("FluxTransformer2DModel: a hook on a batch slice leaves the other rows bit-identical", "[model][flux][hooks]") {
  c10::InferenceMode guard;
  auto model = random_model(tiny_config(false));
  Inputs in = make_inputs(3, 12, 5);
  auto run = [&](std::vector<LayerHook> hooks) {
    FluxTransformerInputs extra;
    extra.hooks = std::move(hooks);
    return model->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids, {}, extra);
  };
  const at::Tensor plain = run({});
  for (const char* stack : {"transformer_blocks", "single_transformer_blocks", "auto"})
    for (LayerHookKind kind : {LayerHookKind::SkipBlock, LayerHookKind::SkipAttention, LayerHookKind::IdentityAttention,
                               LayerHookKind::SmoothedEnergyBlur}) {
      LayerHook h{kind, {{0, 1}, stack}};
      h.batch_start = 1;
      h.batch_size = 1;
      const at::Tensor hooked = run({h});
      INFO(stack << " " << layer_hook_kind_name(kind));
      CHECK(torch::equal(hooked.narrow(0, 0, 1), plain.narrow(0, 0, 1)));
      CHECK(torch::equal(hooked.narrow(0, 2, 1), plain.narrow(0, 2, 1)));
      CHECK_FALSE(torch::allclose(hooked.narrow(0, 1, 1), plain.narrow(0, 1, 1), 0, 1e-4));
    }
  // Skipping every block leaves norm_out/proj_out of the embedded input: the same as a model without blocks.
  LayerHook all_double{LayerHookKind::SkipBlock, {{0, 1}, "transformer_blocks"}};
  LayerHook all_single{LayerHookKind::SkipBlock, {{0, 1}, "single_transformer_blocks"}};
  const at::Tensor skipped = run({all_double, all_single});
  auto no_blocks_cfg = tiny_config(false);
  no_blocks_cfg["num_layers"] = 0;
  no_blocks_cfg["num_single_layers"] = 0;
  auto no_blocks = std::make_shared<FluxTransformer2DModelImpl>(FluxTransformer2DModelConfig::from_json(no_blocks_cfg));
  auto src = model->named_parameters();
  for (auto& p : no_blocks->named_parameters()) p.value().copy_(src[p.key()]);
  CHECK(torch::allclose(skipped, no_blocks->forward(in.hidden, in.encoder, in.pooled, in.timestep, in.img_ids, in.txt_ids),
                        0, 1e-6));
  // SkipFeedForward changes the double blocks' output (ff, ff_context), not the single blocks' (no FeedForward).
  LayerHook ff_double{LayerHookKind::SkipFeedForward, {{0}, "transformer_blocks"}};
  LayerHook ff_single{LayerHookKind::SkipFeedForward, {{0, 1}, "single_transformer_blocks"}};
  CHECK_FALSE(torch::allclose(run({ff_double}), plain, 0, 1e-4));
  CHECK(torch::equal(run({ff_single}), plain));
}

TEST_CASE("FluxTransformer2DModel in bfloat16 follows the float32 goldens (cosine >= 0.999)", "[model][flux][bf16]") {
  c10::InferenceMode guard;
  for (const char* name : {"tiny_flux_transformer", "tiny_flux_dev_transformer"}) {
    const bool dev = std::string(name) == "tiny_flux_dev_transformer";
    auto tensors = read_safetensors_files({kFixtures + "/cases/" + name + ".safetensors"});
    auto model = FluxTransformer2DModelImpl::from_pretrained(dev ? kTinyFluxDev : kTinyFlux, "transformer", {}, {},
                                                             at::kBFloat16);
    REQUIRE(model->dtype() == at::kBFloat16);
    at::Tensor out = model->forward(tensors.at("hidden_states"), tensors.at("encoder_hidden_states"),
                                    tensors.at("pooled_projections"), tensors.at("timestep"), tensors.at("img_ids"),
                                    tensors.at("txt_ids"), dev ? tensors.at("guidance") : at::Tensor());
    REQUIRE(out.scalar_type() == at::kFloat);
    const at::Tensor expected = tensors.at("sample");
    const double cos = torch::cosine_similarity(out.flatten(), expected.flatten(), 0).item<double>();
    INFO(name << " cos " << cos);
    CHECK(cos >= 0.999);
  }
}
