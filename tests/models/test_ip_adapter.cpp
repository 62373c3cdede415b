// IP-Adapter model pieces on the tiny fixtures (tests/fixtures/parity/models/tiny-ip-adapter): the CLIP image
// encoder, the adapter file loader (base / Plus / SDXL, conversion to diffusers' names, errors) and Pillow's uint8
// resampling, and the adapter on tiny-sd's UNet (ip ids in diffusers' order, errors, scale 0 / removal = the plain
// UNet). Parity with transformers / diffusers is in the manifest_control cases, run by
// tests/blocks/test_ip_adapter_parity.cpp.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/adapters/ip_adapter.h"
#include "models/adapters/ip_adapter_unet.h"
#include "models/unet/unet_2d_condition.h"
#include "models/loading/state_dict.h"
#include "models/vision/clip_image_processor.h"
#include "models/vision/clip_vision_model.h"

using namespace tessera;
using Catch::Matchers::Contains;

namespace fs = std::filesystem;

namespace {
const std::string kIP = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models/tiny-ip-adapter";
const std::string kTinySd = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models/tiny-sd";
const std::string kManifest = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/manifest_control.json";

/// params of a manifest_control.json case.
nlohmann::json case_params(const std::string& name) {
  std::ifstream f(kManifest);
  const nlohmann::json m = nlohmann::json::parse(f);
  for (const auto& c : m.at("cases"))
    if (c.value("name", std::string()) == name) return c.at("params");
  FAIL("no case " << name << " in " << kManifest);
  return {};
}

/// A scratch folder removed at the end of the test.
struct TempDir {
  fs::path dir;
  TempDir() {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("tessera_ip_adapter_" + std::to_string(rd()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
}  // namespace

TEST_CASE("CLIPVisionModelWithProjection loads the tiny image encoder strictly and returns every hidden state",
          "[model][ip_adapter]") {
  c10::InferenceMode guard;
  auto enc = CLIPVisionModelWithProjectionImpl::from_pretrained(kIP + "/image_encoder");
  CHECK(enc->type() == "CLIPVisionModelWithProjection");
  CHECK(enc->vision_model->config.hidden_act() == "gelu");
  CHECK(enc->vision_model->config.num_positions() == 65);
  at::manual_seed(0);
  const at::Tensor pixels = at::randn({2, 3, 32, 32});
  const CLIPVisionModelOutput out = enc->forward(pixels);
  CHECK(out.image_embeds.sizes() == at::IntArrayRef({2, 32}));
  CHECK(out.last_hidden_state.sizes() == at::IntArrayRef({2, 65, 32}));
  REQUIRE(out.hidden_states.size() == 4);  // embeddings + 3 layers
  CHECK(at::equal(out.hidden_states.back(), out.last_hidden_state));
  CHECK(out.hidden_states[2].sizes() == at::IntArrayRef({2, 65, 32}));
  // Rows are independent: the second image alone gives the same embedding.
  CHECK(at::allclose(enc->forward(pixels.narrow(0, 1, 1)).image_embeds, out.image_embeds.narrow(0, 1, 1), 1e-5, 1e-6));
  CHECK_THROWS_WITH(enc->forward(at::randn({1, 3, 28, 28})), Contains("pixel_values must be [B, 3, 32, 32]"));
}

TEST_CASE("IP-Adapter files: base, Plus and SDXL are told apart and their shapes inferred", "[model][ip_adapter]") {
  SECTION("base SD") {
    const IPAdapterStateDict sd = read_ip_adapter_state_dict(kIP + "/ip-adapter_sd.safetensors");
    CHECK(sd.kind == IPAdapterKind::Base);
    CHECK(sd.num_tokens == 4);
    CHECK(sd.image_embed_dim == 32);
    CHECK(sd.cross_attention_dim == 32);
    CHECK(sd.image_proj.size() == 4);
    CHECK(sd.image_proj.count("image_embeds.weight") == 1);
    CHECK(sd.image_proj.count("norm.bias") == 1);
    REQUIRE(sd.layers.size() == 6);  // tiny-sd: 6 cross-attention layers
    CHECK(sd.layers.begin()->first == 1);
    CHECK(sd.layers.rbegin()->first == 11);
    CHECK(sd.layers.at(5).to_k_ip.sizes() == at::IntArrayRef({64, 32}));
    CHECK(sd.layers.at(5).to_v_ip.sizes() == at::IntArrayRef({64, 32}));
  }
  SECTION("Plus SD: the Resampler's names are converted and to_kv is split k first") {
    const std::string file = kIP + "/ip-adapter-plus_sd.safetensors";
    const IPAdapterStateDict sd = read_ip_adapter_state_dict(file);
    CHECK(sd.kind == IPAdapterKind::Plus);
    CHECK(sd.plus.heads == 2);
    CHECK(sd.plus.depth == 4);
    CHECK(sd.plus.num_queries == 6);
    CHECK(sd.plus.hidden_dims == 48);
    CHECK(sd.plus.embed_dims == 32);
    CHECK(sd.plus.output_dims == 32);
    CHECK(sd.plus.ff_inner_dim == 192);
    CHECK(sd.num_tokens == 6);
    CHECK(sd.image_proj.size() == 55);  // params.converted_state_dict_keys of the parity case
    for (const char* k : {"layers.3.ln0.weight", "layers.3.ln1.bias", "layers.3.attn.to_out.0.weight",
                          "layers.3.ff.0.weight", "layers.3.ff.1.net.0.proj.weight", "layers.3.ff.1.net.2.weight"})
      CHECK(sd.image_proj.count(k) == 1);
    const auto raw = read_safetensors_files({file});
    const at::Tensor kv = raw.at("image_proj.layers.1.0.to_kv.weight");  // [256, 48]
    CHECK(at::equal(sd.image_proj.at("layers.1.attn.to_k.weight"), kv.narrow(0, 0, 128)));
    CHECK(at::equal(sd.image_proj.at("layers.1.attn.to_v.weight"), kv.narrow(0, 128, 128)));
    CHECK(sd.layers.size() == 6);
  }
  SECTION("base SDXL") {
    const IPAdapterStateDict sd = read_ip_adapter_state_dict(kIP + "/ip-adapter_sdxl.safetensors");
    CHECK(sd.kind == IPAdapterKind::Base);
    CHECK(sd.cross_attention_dim == 64);
    REQUIRE(sd.layers.size() == 12);  // ids 1..23
    CHECK(sd.layers.rbegin()->first == 23);
    CHECK(sd.layers.at(23).to_k_ip.sizes() == at::IntArrayRef({64, 64}));
  }
}

TEST_CASE("IPAdapter::from_file builds the projection; project keeps [B, num_images, tokens, cross]",
          "[model][ip_adapter]") {
  c10::InferenceMode guard;
  auto base = IPAdapterImpl::from_file(kIP + "/ip-adapter_sd.safetensors");
  CHECK(base->image_proj->class_name() == "ImageProjection");
  CHECK_FALSE(base->uses_penultimate_hidden_states());
  at::manual_seed(1);
  const at::Tensor embeds = at::randn({2, 1, 32});
  const at::Tensor tokens = base->image_proj->project(embeds);
  CHECK(tokens.sizes() == at::IntArrayRef({2, 1, 4, 32}));
  // Rows (and images) are projected independently.
  CHECK(at::allclose(base->image_proj->project(embeds.narrow(0, 1, 1)), tokens.narrow(0, 1, 1), 1e-5, 1e-6));
  CHECK_THROWS_WITH(base->image_proj->project(at::randn({2, 32})), Contains("[B, num_images, 32]"));

  auto plus = IPAdapterImpl::from_file(kIP + "/ip-adapter-plus_sd.safetensors");
  CHECK(plus->image_proj->class_name() == "IPAdapterPlusImageProjection");
  CHECK(plus->uses_penultimate_hidden_states());
  CHECK(plus->image_proj->project(at::randn({2, 1, 65, 32})).sizes() == at::IntArrayRef({2, 1, 6, 32}));
  CHECK(plus->layers.size() == 6);
  CHECK(plus->nbytes() > 0);
}

TEST_CASE("IP-Adapter loader errors name the file and what is wrong", "[model][ip_adapter]") {
  const std::string not_ip = kIP + "/image_encoder/model.safetensors";
  CHECK_THROWS_AS(read_ip_adapter_state_dict(not_ip), ModelLoadError);
  CHECK_THROWS_WITH(read_ip_adapter_state_dict(not_ip),
                    Contains("not an IP-Adapter file") && Contains("image_proj.*") &&
                        Contains("ip_adapter.<id>.to_k_ip.weight") && Contains("model.safetensors"));
  CHECK_THROWS_WITH(read_ip_adapter_state_dict(kIP + "/missing.safetensors"), Contains("no such file"));

  TempDir tmp;
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [k, v] : read_safetensors_files({kIP + "/ip-adapter_sd.safetensors"})) tensors[k] = v.clone();
  SECTION("an even id") {
    tensors["ip_adapter.2.to_k_ip.weight"] = tensors.at("ip_adapter.1.to_k_ip.weight");
    tensors["ip_adapter.2.to_v_ip.weight"] = tensors.at("ip_adapter.1.to_v_ip.weight");
    const std::string f = (tmp.dir / "even.safetensors").string();
    save_safetensors(f, tensors);
    CHECK_THROWS_WITH(read_ip_adapter_state_dict(f), Contains("ip_adapter id 2 is not a positive odd number"));
  }
  SECTION("a gap in the ids") {
    tensors.erase("ip_adapter.3.to_k_ip.weight");
    tensors.erase("ip_adapter.3.to_v_ip.weight");
    const std::string f = (tmp.dir / "gap.safetensors").string();
    save_safetensors(f, tensors);
    CHECK_THROWS_WITH(read_ip_adapter_state_dict(f), Contains("3 is missing before 5"));
  }
  SECTION("a missing to_v_ip") {
    tensors.erase("ip_adapter.7.to_v_ip.weight");
    const std::string f = (tmp.dir / "no_v.safetensors").string();
    save_safetensors(f, tensors);
    CHECK_THROWS_WITH(read_ip_adapter_state_dict(f), Contains("missing tensor 'ip_adapter.7.to_v_ip.weight'"));
  }
  SECTION("a cross width that does not match the projection") {
    tensors["ip_adapter.9.to_k_ip.weight"] = at::zeros({64, 16});
    tensors["ip_adapter.9.to_v_ip.weight"] = at::zeros({64, 16});
    const std::string f = (tmp.dir / "cross.safetensors").string();
    save_safetensors(f, tensors);
    CHECK_THROWS_WITH(read_ip_adapter_state_dict(f), Contains("ip_adapter.9.to_k_ip.weight") && Contains("32"));
  }
}

TEST_CASE("Pillow uint8 resize: constants stay constant, the same size is the identity, one upscale by hand",
          "[model][ip_adapter]") {
  const at::Tensor flat = at::full({40, 52, 3}, 173, at::kByte);
  for (auto [h, w] : {std::pair<int64_t, int64_t>{32, 41}, {13, 7}, {80, 100}, {40, 17}}) {
    INFO(h << "x" << w);
    const at::Tensor r = pil_resize_uint8(flat, h, w);
    CHECK(r.sizes() == at::IntArrayRef({h, w, 3}));
    CHECK(at::equal(r, at::full({h, w, 3}, 173, at::kByte)));
  }
  at::manual_seed(2);
  const at::Tensor img = at::randint(0, 256, {9, 11, 3}, at::kByte);
  CHECK(at::equal(pil_resize_uint8(img, 9, 11), img));
  // A 1x2 -> 1x4 horizontal upscale of [0, 255]: centres 0.25, 0.75, 1.25, 1.75 (scale 0.5, support 2) give
  // the Keys weights of 255 at distances 0.75/0.25 etc.; the values follow from bicubic(d) with a = -0.5.
  const at::Tensor two = at::tensor({0, 255}, at::kByte).view({1, 2, 1});
  const at::Tensor up = pil_resize_uint8(two, 1, 4).flatten();
  auto keys = [](double x) {
    x = std::fabs(x);
    return x < 1 ? (1.5 * x - 2.5) * x * x + 1 : x < 2 ? ((-0.5 * x + 2.5) * x - 4) * x + 2 : 0.0;
  };
  for (int i = 0; i < 4; ++i) {
    const double c = (i + 0.5) * 0.5;
    const double w0 = keys(0.5 - c), w1 = keys(1.5 - c);
    const double v = 255.0 * w1 / (w0 + w1);
    INFO("pixel " << i);
    CHECK(std::abs(up[i].item<int>() - std::clamp(std::lround(v), 0L, 255L)) <= 1);
  }
  // Shortest-edge sizes as transformers computes them.
  CHECK((shortest_edge_resize_size(40, 52, 32) == std::pair<int64_t, int64_t>(32, 41)));
  CHECK((shortest_edge_resize_size(64, 48, 32) == std::pair<int64_t, int64_t>(42, 32)));
  // Centre crop rounds the offsets down; a smaller image is zero-padded.
  const at::Tensor chw = at::arange(5 * 6, at::kLong).view({1, 5, 6});
  CHECK(at::equal(center_crop_chw(chw, 2, 3), chw.slice(1, 1, 3).slice(2, 1, 4)));
  const at::Tensor padded = center_crop_chw(at::ones({1, 2, 2}, at::kByte), 3, 3);
  CHECK(padded.sizes() == at::IntArrayRef({1, 3, 3}));
  CHECK(padded.sum().item<int64_t>() == 4);
  CHECK_THROWS_AS(pil_resize_uint8(at::zeros({4, 4, 3}), 2, 2), InputError);
}

TEST_CASE("CLIPImageProcessor: defaults, preprocessor_config.json and a batch of differently sized images",
          "[model][ip_adapter]") {
  const CLIPImageProcessor d = CLIPImageProcessor::from_pretrained(kIP + "/image_encoder");  // has none
  CHECK(d.shortest_edge == 224);
  CHECK(d.crop_height == 224);
  const CLIPImageProcessor p = d.with_size(32);
  at::manual_seed(3);
  const CLIPImageProcessorOutput out =
      p.preprocess({at::randint(0, 256, {40, 52, 3}, at::kByte), at::randint(0, 256, {64, 48, 4}, at::kByte)});
  CHECK(out.pixel_values.sizes() == at::IntArrayRef({2, 3, 32, 32}));
  CHECK(out.resized_cropped.scalar_type() == at::kByte);
  const at::Tensor mean = at::tensor({0.48145466, 0.4578275, 0.40821073}, at::kFloat).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor({0.26862954, 0.26130258, 0.27577711}, at::kFloat).view({1, 3, 1, 1});
  CHECK(at::allclose(out.pixel_values, (out.resized_cropped.to(at::kFloat) / 255.0 - mean) / std, 1e-5, 1e-6));

  TempDir tmp;
  {
    std::ofstream f(tmp.dir / "preprocessor_config.json");
    f << R"({"crop_size": {"height": 20, "width": 20}, "size": {"shortest_edge": 24}, "do_center_crop": true,
             "image_processor_type": "CLIPImageProcessor", "resample": 3})";
  }
  const CLIPImageProcessor c = CLIPImageProcessor::from_pretrained(tmp.dir.string());
  CHECK(c.shortest_edge == 24);
  CHECK(c.crop_width == 20);
  CHECK(c.preprocess({at::zeros({30, 30, 3}, at::kByte)}).pixel_values.sizes() == at::IntArrayRef({1, 3, 20, 20}));
  CHECK_THROWS_WITH(c.preprocess({at::zeros({30, 30, 2}, at::kByte)}), Contains("must have 3 channels"));
}

TEST_CASE("IP-Adapter on tiny-sd's UNet: ids in diffusers' order, scale 0 and removal give the plain UNet",
          "[model][ip_adapter]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kTinySd, "unet");
  auto adapter = IPAdapterImpl::from_file(kIP + "/ip-adapter_sd.safetensors");

  // The attn2 layers and their ids, as diffusers listed them for the parity case (down → up → mid).
  const std::vector<UNetIPAdapterLayer> layers = unet_ip_adapter_layers(*unet);
  const nlohmann::json ids = case_params("ip_adapter_sd_unet").at("ip_layer_ids");
  REQUIRE(layers.size() == ids.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    INFO("layer " << i);
    const std::string proc = ids[i].at("processor").get<std::string>();
    CHECK(layers[i].path + ".processor" == proc);
    CHECK(layers[i].ip_id == ids[i].at("ip_id").get<int64_t>());
    CHECK(layers[i].attn->to_k->weight.size(0) == ids[i].at("hidden_size").get<int64_t>());
  }
  CHECK(layers.back().path == "mid_block.attentions.0.transformer_blocks.0.attn2");  // last, though registered before up

  at::manual_seed(4);
  const at::Tensor sample = at::randn({2, 4, 16, 16});
  const at::Tensor ehs = at::randn({2, 77, 32});
  const at::Tensor t = at::scalar_tensor(333, at::kLong);
  const at::Tensor plain = unet->forward(sample, t, ehs);
  UNet2DConditionInputs in;
  in.ip_hidden_states = {adapter->image_proj->project(at::randn({2, 1, 32}))};  // [2, 1, 4, 32]

  REQUIRE(install_ip_adapter(*unet, *adapter, 0.6) == 6);
  for (const UNetIPAdapterLayer& l : layers) {
    INFO(l.path);
    auto* p = dynamic_cast<IPAdapterAttnProcessor*>(l.attn->processor().get());
    REQUIRE(p != nullptr);
    CHECK(p->ip_id() == l.ip_id);
    CHECK(p->layer() == l.path);
    REQUIRE(p->terms().size() == 1);
    CHECK(p->terms()[0].scale == 0.6);
    CHECK(at::equal(p->terms()[0].weights.to_k_ip, adapter->layers.at(l.ip_id).to_k_ip));
    CHECK(at::equal(p->terms()[0].weights.to_v_ip, adapter->layers.at(l.ip_id).to_v_ip));
  }
  // Self-attention (attn1) keeps its processor.
  int self_attention = 0;
  for (const auto& item : unet->named_modules("", false))
    if (auto* a = item.value()->as<AttentionImpl>())
      if (item.key().size() > 5 && item.key().compare(item.key().size() - 5, 5, "attn1") == 0) {
        INFO(item.key());
        CHECK(a->processor()->name() == "AttnProcessor2_0");
        ++self_attention;
      }
  CHECK(self_attention == 6);

  const at::Tensor with_ip = unet->forward(sample, t, ehs, in);
  CHECK_FALSE(at::allclose(with_ip, plain, 1e-4, 1e-5));
  // The same tokens as [B, tokens, cross] give the same result.
  UNet2DConditionInputs in3;
  in3.ip_hidden_states = {in.ip_hidden_states[0].flatten(1, 2)};
  CHECK(at::equal(unet->forward(sample, t, ehs, in3), with_ip));
  // A call without tokens is the plain UNet (the adapter stays installed for calls with tokens); a wrong batch is
  // refused.
  CHECK(at::equal(unet->forward(sample, t, ehs), plain));
  CHECK(at::equal(unet->forward(sample, t, ehs, in), with_ip));
  UNet2DConditionInputs bad;
  bad.ip_hidden_states = {in.ip_hidden_states[0].narrow(0, 0, 1)};
  CHECK_THROWS_WITH(unet->forward(sample, t, ehs, bad), Contains("ip_hidden_states[0] must be [2,"));

  // Scale 0 skips the ip term: bit-identical to the plain UNet, with or without tokens.
  CHECK(set_ip_adapter_scale(*unet, 0.0) == 6);
  CHECK(at::equal(unet->forward(sample, t, ehs, in), plain));
  CHECK(at::equal(unet->forward(sample, t, ehs), plain));
  CHECK_THROWS_AS(set_ip_adapter_scales(*unet, {0.5, 0.5}), ValidationError);

  // Two adapters: the second at scale 0 leaves the first's result unchanged.
  auto plus = IPAdapterImpl::from_file(kIP + "/ip-adapter-plus_sd.safetensors");
  REQUIRE(install_ip_adapters(*unet, {{adapter.get(), 0.6}, {plus.get(), 0.0}}) == 6);
  UNet2DConditionInputs in2 = in;
  in2.ip_hidden_states.push_back(plus->image_proj->project(at::randn({2, 1, 65, 32})));  // [2, 1, 6, 32]
  CHECK(at::equal(unet->forward(sample, t, ehs, in2), with_ip));
  CHECK_THROWS_WITH(unet->forward(sample, t, ehs, in), Contains("2 IP-Adapter(s)"));  // one token tensor for two
  CHECK(set_ip_adapter_scales(*unet, {0.6, 0.5}) == 6);
  CHECK_FALSE(at::allclose(unet->forward(sample, t, ehs, in2), with_ip, 1e-4, 1e-5));

  // Removal restores the processors from before the first install.
  CHECK(remove_ip_adapters(*unet) == 6);
  for (const UNetIPAdapterLayer& l : layers) CHECK(l.attn->processor()->name() == "AttnProcessor2_0");
  CHECK(at::equal(unet->forward(sample, t, ehs), plain));
  CHECK(at::equal(unet->forward(sample, t, ehs, in), plain));  // tokens without IP processors are ignored
  CHECK(remove_ip_adapters(*unet) == 0);
}

TEST_CASE("IP-Adapter install errors name the layer and the file; nothing is installed", "[model][ip_adapter]") {
  c10::InferenceMode guard;
  auto unet = UNet2DConditionModelImpl::from_pretrained(kTinySd, "unet");
  SECTION("the SDXL adapter (12 layers) on tiny-sd (6)") {
    auto sdxl = IPAdapterImpl::from_file(kIP + "/ip-adapter_sdxl.safetensors");
    CHECK_THROWS_AS(install_ip_adapter(*unet, *sdxl), ModelLoadError);
    CHECK_THROWS_WITH(install_ip_adapter(*unet, *sdxl),
                      Contains("ip-adapter_sdxl.safetensors") && Contains("has 12 cross-attention layers") &&
                          Contains("the UNet has 6") && Contains("mid_block.attentions.0.transformer_blocks.0.attn2") &&
                          Contains("ip_adapter.13 has no UNet layer"));
  }
  SECTION("fewer layers than the UNet") {
    auto few = IPAdapterImpl::from_file(kIP + "/ip-adapter_sd.safetensors");
    few->layers.erase(11);
    CHECK_THROWS_WITH(install_ip_adapter(*unet, *few),
                      Contains("ip-adapter_sd.safetensors") && Contains("has 5 cross-attention layers") &&
                          Contains("UNet layer mid_block.attentions.0.transformer_blocks.0.attn2 (ip id 11)"));
  }
  SECTION("a layer of the wrong shape") {
    auto bad = IPAdapterImpl::from_file(kIP + "/ip-adapter_sd.safetensors");
    bad->layers.at(5).to_v_ip = at::zeros({32, 32});
    CHECK_THROWS_WITH(install_ip_adapter(*unet, *bad),
                      Contains("ip_adapter.5.to_v_ip.weight is [32, 32]") &&
                          Contains("up_blocks.0.attentions.0.transformer_blocks.0.attn2") && Contains("[64, 32]"));
  }
  for (const UNetIPAdapterLayer& l : unet_ip_adapter_layers(*unet)) CHECK(l.attn->processor()->name() == "AttnProcessor2_0");
}

TEST_CASE("a CLIP vision encoder in one .safetensors file (ComfyUI's clip_vision): the config from its weights",
          "[model][ip_adapter]") {
  // ViT-H/14's shapes (the encoder of ip-adapter_sd15); uninitialised tensors: only their shapes are read.
  std::map<std::string, at::Tensor> t;
  const std::string e = "vision_model.embeddings.";
  t[e + "class_embedding"] = at::empty({1280});
  t[e + "patch_embedding.weight"] = at::empty({1280, 3, 14, 14});
  t[e + "position_embedding.weight"] = at::empty({257, 1280});  // (224 / 14)^2 + 1
  t["vision_model.encoder.layers.0.mlp.fc1.weight"] = at::empty({5120, 1280});
  for (int i = 1; i < 32; ++i) t["vision_model.encoder.layers." + std::to_string(i) + ".mlp.fc1.weight"] = at::empty({1});
  t["visual_projection.weight"] = at::empty({1024, 1280});
  const CLIPVisionConfig c = clip_vision_config_from_weights(t, "CLIP-ViT-H-14.safetensors");
  CHECK(c.hidden_size() == 1280);
  CHECK(c.num_hidden_layers() == 32);
  CHECK(c.num_attention_heads() == 16);
  CHECK(c.patch_size() == 14);
  CHECK(c.image_size() == 224);
  CHECK(c.intermediate_size() == 5120);
  CHECK(c.projection_dim() == 1024);
  CHECK(c.hidden_act() == "gelu");
  // ViT-L/14 (OpenAI): quick_gelu.
  t[e + "class_embedding"] = at::empty({1024});
  CHECK(clip_vision_config_from_weights(t, "vit-l.safetensors").hidden_act() == "quick_gelu");
  t.erase("visual_projection.weight");
  CHECK_THROWS_WITH(clip_vision_config_from_weights(t, "vit-l.safetensors"),
                    Contains("vit-l.safetensors") && Contains("visual_projection.weight"));

  // The tiny encoder's width (32) is no published one: its heads cannot be known, so its file alone is refused,
  // also when an IP-Adapter names it as its encoder (the file is routed to the single-file loader).
  const std::string tiny = kIP + "/image_encoder/model.safetensors";
  CHECK_THROWS_WITH(CLIPVisionModelWithProjectionImpl::from_file(tiny), Contains("width 32") && Contains("config.json"));
  CHECK_THROWS_WITH(IPAdapterImpl::load(kIP + "/ip-adapter_sd.safetensors", tiny), Contains("width 32"));
  // The folder loads, found beside the file by default.
  auto ip = IPAdapterImpl::load(kIP + "/ip-adapter_sd.safetensors", "");
  REQUIRE(ip->image_encoder);
  CHECK(ip->feature_extractor.crop_height == 32);  // CLIPImageProcessor(size=crop=image_size)
}
