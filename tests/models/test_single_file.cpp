// Single-file checkpoints: the LDM <-> diffusers name tables, family detection on synthetic key sets, and the
// conversion of the shipped tiny single files (the parity cases compare every tensor with diffusers' result).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/ldm_names.h"
#include "models/loading/model_defaults.h"
#include "models/loading/single_file.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kModels = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models";

struct TempDir {
  fs::path dir;
  TempDir() {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_single_file_" + std::to_string(rng()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

// The published SD1.5 UNet config's layout (4 blocks, 2 layers, attention in the first three down blocks).
UNet2DConditionModelConfig sd15_unet() {
  return UNet2DConditionModelConfig::from_json(nlohmann::json{
      {"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
      {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
      {"block_out_channels", {320, 640, 1280, 1280}},
      {"layers_per_block", 2},
      {"cross_attention_dim", 768},
      {"attention_head_dim", 8}});
}

// Writes a safetensors file holding zeros of the given shapes under the given names.
std::string synthetic(const TempDir& t, const std::string& name,
                      const std::vector<std::pair<std::string, std::vector<int64_t>>>& keys) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [k, shape] : keys) tensors[k] = at::zeros(shape);
  const std::string path = t.path(name);
  save_safetensors(path, tensors);
  return path;
}

const std::string U = "model.diffusion_model.";

}  // namespace

TEST_CASE("UNet name table: the SD1.5 layout maps as diffusers' conversion tables say", "[single_file]") {
  const NameTable t = unet_name_table(sd15_unet());
  // Pairs from diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py for the published layout.
  const std::vector<std::pair<std::string, std::string>> known = {
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"down_blocks.0.resnets.0.norm1.weight", "input_blocks.1.0.in_layers.0.weight"},
      {"down_blocks.0.resnets.1.conv2.weight", "input_blocks.2.0.out_layers.3.weight"},
      {"down_blocks.0.attentions.1.proj_in.weight", "input_blocks.2.1.proj_in.weight"},
      {"down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
      {"down_blocks.3.resnets.1.time_emb_proj.bias", "input_blocks.11.0.emb_layers.1.bias"},
      {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
       "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
      {"mid_block.resnets.1.conv1.weight", "middle_block.2.in_layers.2.weight"},
      {"up_blocks.0.resnets.2.conv1.weight", "output_blocks.2.0.in_layers.2.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
      {"up_blocks.1.attentions.0.norm.weight", "output_blocks.3.1.norm.weight"},
      {"up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"},
      {"up_blocks.3.attentions.2.proj_out.weight", "output_blocks.11.1.proj_out.weight"},
      {"conv_norm_out.weight", "out.0.weight"},
      {"conv_out.bias", "out.2.bias"},
  };
  for (const auto& [d, l] : known) {
    INFO(d << " <-> " << l);
    CHECK(t.to_ldm(d) == l);
    CHECK(t.to_diffusers(l) == d);
  }
  CHECK_FALSE(t.to_diffusers("input_blocks.12.0.in_layers.0.weight"));  // SD1.5 has input_blocks 0..11
  CHECK_FALSE(t.to_diffusers("label_emb.1.weight"));
}

TEST_CASE("UNet name table: the shipped SDXL base config gives SGM's published layout", "[single_file]") {
  ModelConfig cfg = ModelConfig::from_folder(shipped_family_dir("sdxl-base"), "unet");
  const NameTable t = unet_name_table(UNet2DConditionModelConfig::from_config(cfg));
  // Keys of sd_xl_base_1.0.safetensors (model.diffusion_model.*): 3 levels, the first without attention, 10-deep
  // transformers at the last level, up blocks with attention first.
  const std::vector<std::pair<std::string, std::string>> known = {
      {"add_embedding.linear_1.weight", "label_emb.0.0.weight"},
      {"down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"},
      {"down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight",
       "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight"},
      {"down_blocks.1.downsamplers.0.conv.bias", "input_blocks.6.0.op.bias"},
      {"down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.weight",
       "input_blocks.8.1.transformer_blocks.9.ff.net.2.weight"},
      {"up_blocks.0.attentions.2.proj_out.weight", "output_blocks.2.1.proj_out.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.2.conv.weight"},
      {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"},
      {"up_blocks.2.resnets.2.conv_shortcut.weight", "output_blocks.8.0.skip_connection.weight"},
  };
  for (const auto& [d, l] : known) {
    INFO(d << " <-> " << l);
    CHECK(t.to_ldm(d) == l);
    CHECK(t.to_diffusers(l) == d);
  }
  CHECK_FALSE(t.to_diffusers("input_blocks.9.0.in_layers.0.weight"));  // SDXL has input_blocks 0..8
}

TEST_CASE("UNet and VAE name tables: every parameter of a model round-trips to a distinct LDM name",
          "[single_file]") {
  SECTION("tiny-sdxl UNet (addition embedding, transformer depth 2, attention-less first block)") {
    ModelConfig cfg = ModelConfig::from_folder(kModels + "/tiny-sdxl", "unet");
    const auto config = UNet2DConditionModelConfig::from_config(cfg);
    UNet2DConditionModel unet(config);
    const NameTable t = unet_name_table(config);
    std::set<std::string> ldm;
    for (const auto& p : unet->named_parameters()) {
      auto l = t.to_ldm(p.key());
      INFO(p.key());
      REQUIRE(l);
      CHECK(t.to_diffusers(*l) == p.key());
      CHECK(ldm.insert(*l).second);
    }
  }
  SECTION("tiny-sd VAE (decoder reversed, mid attention)") {
    ModelConfig cfg = ModelConfig::from_folder(kModels + "/tiny-sd", "vae");
    const auto config = AutoencoderKLConfig::from_config(cfg);
    AutoencoderKL vae(config);
    const NameTable t = vae_name_table(config);
    CHECK(t.to_ldm("decoder.up_blocks.0.resnets.1.conv1.weight") == "decoder.up.1.block.1.conv1.weight");
    CHECK_FALSE(t.to_ldm("decoder.up_blocks.0.resnets.2.conv1.weight"));  // layers_per_block 1: two resnets per up block
    CHECK(t.to_ldm("decoder.up_blocks.0.upsamplers.0.conv.weight") == "decoder.up.1.upsample.conv.weight");
    CHECK(t.to_ldm("encoder.mid_block.attentions.0.to_out.0.bias") == "encoder.mid.attn_1.proj_out.bias");
    std::set<std::string> ldm;
    for (const auto& p : vae->named_parameters()) {
      auto l = t.to_ldm(p.key());
      INFO(p.key());
      REQUIRE(l);
      CHECK(t.to_diffusers(*l) == p.key());
      CHECK(ldm.insert(*l).second);
    }
  }
}

TEST_CASE("single-file detection: families from synthetic key sets, and clear errors for other files",
          "[single_file]") {
  TempDir t;
  auto clip_l = std::pair<std::string, std::vector<int64_t>>{
      "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", {8, 4}};
  auto family = [&](const std::string& name, const std::vector<std::pair<std::string, std::vector<int64_t>>>& keys) {
    return SingleFileCheckpoint::open(synthetic(t, name, keys))->detect().family;
  };
  CHECK(family("sd1.safetensors", {{U + "input_blocks.0.0.weight", {8, 4, 3, 3}}, clip_l}) == "sd1");
  CHECK(family("sd1-inpaint.safetensors", {{U + "input_blocks.0.0.weight", {8, 9, 3, 3}}, clip_l}) == "sd1-inpaint");
  CHECK(family("sd2.safetensors", {{U + "input_blocks.0.0.weight", {8, 4, 3, 3}},
                                   {U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", {8, 1024}},
                                   {"cond_stage_model.model.token_embedding.weight", {8, 4}}}) == "sd2-v");
  CHECK(family("sdxl.safetensors", {{U + "input_blocks.0.0.weight", {8, 4, 3, 3}},
                                    {"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", {4}},
                                    {"conditioner.embedders.1.model.ln_final.weight", {4}}}) == "sdxl-base");
  CHECK(family("refiner.safetensors", {{U + "input_blocks.0.0.weight", {8, 4, 3, 3}},
                                       {"conditioner.embedders.0.model.ln_final.weight", {4}}}) == "sdxl-refiner");
  CHECK(family("sdxl-inpaint.safetensors",
               {{U + "input_blocks.0.0.weight", {8, 9, 3, 3}},
                {"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", {4}},
                {"conditioner.embedders.1.model.ln_final.weight", {4}}}) == "sdxl-inpaint");

  auto error_of = [&](const std::string& name, const std::vector<std::pair<std::string, std::vector<int64_t>>>& keys) {
    try {
      SingleFileCheckpoint::open(synthetic(t, name, keys))->detect();
    } catch (const ModelLoadError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("lora.safetensors", {{"lora_unet_conv_in.lora_down.weight", {4, 4}}}),
             Catch::Contains("a LoRA") && Catch::Contains("--lora"));
  CHECK_THAT(error_of("pix2pix.safetensors", {{U + "input_blocks.0.0.weight", {8, 8, 3, 3}}, clip_l}),
             Catch::Contains("8 input channels") && Catch::Contains("InstructPix2Pix"));
  CHECK_THAT(error_of("unet-only.safetensors", {{U + "input_blocks.0.0.weight", {8, 4, 3, 3}}}),
             Catch::Contains("cannot tell the family") && Catch::Contains("cond_stage_model.transformer."));
  CHECK_THAT(error_of("other.safetensors", {{"encoder.weight", {2, 2}}}),
             Catch::Contains("not a Stable Diffusion checkpoint") && Catch::Contains("model.diffusion_model."));
  CHECK_THAT(error_of("controlnet.safetensors", {{"control_model.input_hint_block.0.weight", {2, 2}}}),
             Catch::Contains("ControlNet"));
}

TEST_CASE("single-file options: model_type names a shipped family, anything else is an error listing them",
          "[single_file]") {
  auto ckpt = SingleFileCheckpoint::open(kModels + "/single_file/tiny-sd2-v.safetensors");
  CHECK(SingleFileOptions{"sd2", ""}.family(*ckpt) == "sd2");
  CHECK(SingleFileOptions{"auto", ""}.family(*ckpt) == "sd2-v");  // OpenCLIP under cond_stage_model.model.
  const SingleFileOptions with_config{"", kModels + "/tiny-sd2"}, unknown{"sd3", ""}, not_a_folder{"", kModels};
  CHECK(with_config.config_dir(*ckpt) == kModels + "/tiny-sd2");
  CHECK_THROWS_WITH(unknown.family(*ckpt), Catch::Contains("sd1") && Catch::Contains("sdxl-base"));
  CHECK_THROWS_AS(not_a_folder.config_dir(*ckpt), ModelLoadError);  // no model_index.json
}

TEST_CASE("single-file conversion: the tiny SD1 file gives the folder's tensors, views of the file", "[single_file]") {
  auto ckpt = SingleFileCheckpoint::open(kModels + "/single_file/tiny-sd-v1.safetensors");
  for (const std::string component : {"unet", "vae", "text_encoder"}) {
    INFO(component);
    const auto converted = ckpt->component_tensors(component, read_component_config(kModels + "/tiny-sd", component));
    const auto folder = read_safetensors_files(resolve_weight_files(
        component_dir(kModels + "/tiny-sd", component),
        component == "text_encoder" ? kTransformersWeightsName : kDiffusersWeightsName));
    size_t compared = 0;
    for (const auto& [key, expected] : folder) {
      INFO(key);
      REQUIRE(converted.count(key));
      CHECK(at::equal(converted.at(key).tensor, expected));
      ++compared;
    }
    CHECK(compared == folder.size());
    for (const auto& [key, t] : converted) CHECK((folder.count(key) || key.find("position_ids") != std::string::npos));
  }
  CHECK_THROWS_WITH(ckpt->component_tensors("text_encoder_2", nlohmann::json::object()),
                    Catch::Contains("no text_encoder_2") && Catch::Contains("conditioner.embedders.1.model."));
}

TEST_CASE("single-file loading refuses files it cannot read, naming them", "[single_file]") {
  TempDir t;
  {
    std::ofstream(t.path("legacy.ckpt"), std::ios::binary) << "\x80\x02}q\x00.";  // a bare (pre-zip) pickle
  }
  CHECK_THROWS_WITH(SingleFileCheckpoint::open(t.path("legacy.ckpt")),
                    Catch::Contains("legacy.ckpt") && Catch::Contains("pickle") && Catch::Contains("safetensors"));
  {
    std::ofstream(t.path("short.safetensors"), std::ios::binary) << "\x10\x00";
  }
  CHECK_THROWS_AS(SingleFileCheckpoint::open(t.path("short.safetensors")), ModelLoadError);
  CHECK_THROWS_WITH(SingleFileCheckpoint::open(t.path("missing.safetensors")), Catch::Contains("does not exist"));
}
