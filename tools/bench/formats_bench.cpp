// tessera_bench_formats: the files users have, measured on the full-size SD1.5 architecture (random weights from
// tessera_make_random_sd15; never commit the outputs).
//
//   tessera_bench_formats to-single-file DIR OUT.safetensors
//       writes the diffusers folder DIR (unet, vae, text_encoder) as one LDM-layout single file, tensor by tensor
//       in the folder's dtype (fp16 for tessera_make_random_sd15), with the names of models/loading/ldm_names.h
//   tessera_bench_formats load MODEL [--config DIR] [--model-type T]
//       loads unet, vae and text_encoder of MODEL (a folder or a single file) as `tessera run` does (registry
//       factories, float32) and prints each load's wall time and the process's peak RSS; run it once per MODEL,
//       each in its own process, so the peaks do not mix
//   tessera_bench_formats lora DIR [--rank R] [--linear-only]
//       loads DIR's UNet, writes a random kohya LoRA of rank R (default 32) for every Linear and Conv2d of it
//       (LoCon: the worst case; --linear-only: Linear layers only, as a plain kohya LoRA of the attention and
//       feed-forward layers), then times reading the file, fusing it and unfusing it
#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include <torch/torch.h>

#include "tessera/components.h"
#include "tessera/registry.h"
#include "tessera/runtime.h"
#include "engine/safetensors.h"
#include "models/adapters/lora.h"
#include "models/loading/config_reader.h"
#include "models/loading/diffusers_folder.h"
#include "models/loading/ldm_names.h"
#include "models/loading/state_dict.h"
#include "models/register.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"
#include "tools/bench/bench_util.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int to_single_file(const std::string& dir, const std::string& out) {
  std::map<std::string, at::Tensor> tensors;
  {
    ModelConfig c = ModelConfig::from_folder(dir, "unet");
    const NameTable t = unet_name_table(UNet2DConditionModelConfig::from_config(c));
    for (const auto& [k, v] : read_safetensors_files(resolve_weight_files(component_dir(dir, "unet"), kDiffusersWeightsName))) {
      auto l = t.to_ldm(k);
      if (!l) throw std::runtime_error("unet tensor " + k + " has no LDM name");
      tensors["model.diffusion_model." + *l] = v;
    }
  }
  {
    ModelConfig c = ModelConfig::from_folder(dir, "vae");
    const NameTable t = vae_name_table(AutoencoderKLConfig::from_config(c));
    for (const auto& [k, v] : read_safetensors_files(resolve_weight_files(component_dir(dir, "vae"), kDiffusersWeightsName))) {
      auto l = t.to_ldm(k);
      if (!l) throw std::runtime_error("vae tensor " + k + " has no LDM name");
      const bool attn = k.find("mid_block.attentions.0.to_") != std::string::npos && v.dim() == 2;
      tensors["first_stage_model." + *l] = attn ? v.unsqueeze(-1).unsqueeze(-1) : v;  // LDM: 1x1 convs
    }
  }
  for (const auto& [k, v] :
       read_safetensors_files(resolve_weight_files(component_dir(dir, "text_encoder"), kTransformersWeightsName)))
    tensors["cond_stage_model.transformer." + k] = v;
  const auto t0 = std::chrono::steady_clock::now();
  save_safetensors(out, tensors);
  std::printf("wrote %s: %zu tensors in %.1f s\n", out.c_str(), tensors.size(), seconds_since(t0));
  return 0;
}

int load(const std::string& model, const std::string& config, const std::string& model_type) {
  Registry registry;
  register_builtin_models(registry);
  const auto t_all = std::chrono::steady_clock::now();
  std::vector<ComponentPtr> keep;  // everything stays loaded, as in a run
  for (const auto& [name, type] : std::vector<std::pair<std::string, std::string>>{
           {"text_encoder", "CLIPTextModel"}, {"unet", "UNet2DConditionModel"}, {"vae", "AutoencoderKL"}}) {
    ComponentSpec spec;
    spec.name = name;
    spec.type = type;
    spec.from = model;
    spec.subfolder = name;
    spec.config_from = config;
    spec.model_type = model_type;
    const auto t0 = std::chrono::steady_clock::now();
    keep.push_back(registry.create_component(spec));
    std::printf("%-13s %6.2f s  %7.1f MB params  peak RSS %7.0f MB\n", name.c_str(), seconds_since(t0),
                keep.back()->nbytes() / 1e6, bench::peak_rss_mb());
  }
  std::printf("total         %6.2f s  peak RSS %.0f MB  (now %.0f MB)\n", seconds_since(t_all), bench::peak_rss_mb(),
              bench::current_rss_mb());
  return 0;
}

int lora(const std::string& dir, int64_t rank, bool linear_only) {
  torch::NoGradGuard no_grad;
  auto unet = UNet2DConditionModelImpl::from_pretrained(dir, "unet");
  const nlohmann::json config = read_component_config(dir, "unet");
  std::map<std::string, at::Tensor> file;
  size_t modules = 0;
  at::manual_seed(0);
  for (const auto& item : unet->named_modules("", false)) {
    const std::string& path = item.key();
    std::string kohya = "lora_unet_" + path;
    std::replace(kohya.begin(), kohya.end(), '.', '_');
    if (auto* lin = item.value()->as<torch::nn::Linear>()) {
      const auto w = lin->weight;
      file[kohya + ".lora_down.weight"] = at::randn({rank, w.size(1)}) * 0.01;
      file[kohya + ".lora_up.weight"] = at::randn({w.size(0), rank}) * 0.01;
    } else if (auto* conv = item.value()->as<torch::nn::Conv2d>(); conv && !linear_only) {
      const auto w = conv->weight;
      file[kohya + ".lora_down.weight"] = at::randn({rank, w.size(1), w.size(2), w.size(3)}) * 0.01;
      file[kohya + ".lora_up.weight"] = at::randn({w.size(0), rank, 1, 1}) * 0.01;
    } else {
      continue;
    }
    file[kohya + ".alpha"] = at::scalar_tensor(static_cast<double>(rank) / 2);
    ++modules;
  }
  const std::string path = (fs::temp_directory_path() / "tessera_bench_lora.safetensors").string();
  save_safetensors(path, file);
  file.clear();
  std::printf("LoRA: %zu modules (%s), rank %lld, %.0f MB on disk\n", modules,
              linear_only ? "every Linear" : "every Linear and Conv2d",
              static_cast<long long>(rank), fs::file_size(path) / 1e6);
  const double rss0 = bench::current_rss_mb();
  auto t0 = std::chrono::steady_clock::now();
  const LoraFile lf = LoraFile::open(path);
  std::printf("read      %6.2f s\n", seconds_since(t0));
  t0 = std::chrono::steady_clock::now();
  FusedLoras fused = fuse_loras(*unet, "unet", {{&lf, 0.8}}, &config);
  std::printf("fuse      %6.2f s  (%zu weights; RSS %+.0f MB while the originals are kept for unfuse)\n",
              seconds_since(t0), fused.size(), bench::current_rss_mb() - rss0);
  t0 = std::chrono::steady_clock::now();
  fused.unfuse();
  std::printf("unfuse    %6.2f s\n", seconds_since(t0));
  fs::remove(path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    select_blas_core();
    configure_threads(0);
    if (argc >= 4 && std::string(argv[1]) == "to-single-file") return to_single_file(argv[2], argv[3]);
    if (argc >= 3 && std::string(argv[1]) == "load") {
      std::string config, model_type;
      for (int i = 3; i + 1 < argc; i += 2) {
        if (std::string(argv[i]) == "--config") config = argv[i + 1];
        else if (std::string(argv[i]) == "--model-type") model_type = argv[i + 1];
      }
      return load(argv[2], config, model_type);
    }
    if (argc >= 3 && std::string(argv[1]) == "lora") {
      int64_t rank = 32;
      bool linear_only = false;
      for (int i = 3; i < argc; ++i) {
        if (std::string(argv[i]) == "--rank" && i + 1 < argc) rank = std::atoll(argv[++i]);
        else if (std::string(argv[i]) == "--linear-only") linear_only = true;
      }
      return lora(argv[2], rank, linear_only);
    }
    std::fprintf(stderr,
                 "usage: tessera_bench_formats to-single-file DIR OUT.safetensors\n"
                 "       tessera_bench_formats load MODEL [--config DIR] [--model-type T]\n"
                 "       tessera_bench_formats lora DIR [--rank R] [--linear-only]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
