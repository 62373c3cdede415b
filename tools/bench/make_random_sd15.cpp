// tessera_make_random_sd15: writes a diffusers-format Stable Diffusion 1.5 folder with random weights (the SD1.5
// architecture from its configs, for benchmarks; never commit the output, it is ~2 GB):
//
//   OUT/model_index.json
//   OUT/unet/config.json, diffusion_pytorch_model.safetensors          runwayml/stable-diffusion-v1-5's UNet
//   OUT/vae/config.json, diffusion_pytorch_model.safetensors           its AutoencoderKL
//   OUT/text_encoder/config.json, model.safetensors                    CLIP ViT-L/14 text model
//   OUT/scheduler/scheduler_config.json                                EulerDiscreteScheduler, SD1.5 betas
//   OUT/tokenizer/                                                     copied from tiny-sd (see below)
//
// Weights are float16 in the files (as the fp16 checkpoints people download), drawn by LibTorch's default module
// initialisation (seeded). The tokenizer is tiny-sd's (ids < 1000, a subset of the real vocabulary): the text encoder
// still has the full 49408-row embedding, so the compute is the real one; only the token ids differ.
//
// --time-load additionally times, for each component, (a) building the module from its config (LibTorch modules
// initialise their parameters randomly in the constructor) and (b) the loader (`from_pretrained`: build + read the
// safetensors + copy into the parameters), so (b) − (a) is what loading itself costs.
//
//   tessera_make_random_sd15 OUT_DIR [--tokenizer DIR] [--seed N] [--time-load] [--only-time-load] [--threads T]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <torch/torch.h>

#include "tools/bench/bench_util.h"
#include "tools/bench/sd15_configs.h"
#include "tessera/runtime.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/text/clip_text_model.h"
#include "models/unet/unet_2d_condition.h"
#include "models/vae/autoencoder_kl.h"

namespace fs = std::filesystem;
using namespace tessera;
using namespace tessera::bench;
using Clock = std::chrono::steady_clock;

namespace {

// SD1.5's betas with diffusers' EulerDiscreteScheduler defaults otherwise.
const char* kSchedulerConfig = R"({
  "_class_name": "EulerDiscreteScheduler",
  "_diffusers_version": "0.40.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "interpolation_type": "linear",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "steps_offset": 1,
  "timestep_spacing": "linspace",
  "use_karras_sigmas": false
})";

const char* kModelIndex = R"({
  "_class_name": "StableDiffusionPipeline",
  "_diffusers_version": "0.40.0",
  "feature_extractor": [null, null],
  "image_encoder": [null, null],
  "requires_safety_checker": false,
  "safety_checker": [null, null],
  "scheduler": ["diffusers", "EulerDiscreteScheduler"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
})";

double s_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream f(path);
  f << nlohmann::json::parse(text).dump(2) << "\n";
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

ModelConfig config_of(const char* text, const std::string& name) { return ModelConfig(nlohmann::json::parse(text), name); }

/// Every parameter and persistent buffer as float16, under the module's (diffusers / transformers) names.
void save_fp16(const torch::nn::Module& module, const fs::path& path) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& p : module.named_parameters(true)) tensors[p.key()] = p.value().to(at::kHalf).contiguous();
  for (const auto& b : module.named_buffers(true)) {
    if (b.key().find("position_ids") != std::string::npos) continue;  // transformers' non-persistent buffer
    tensors[b.key()] = b.value().is_floating_point() ? b.value().to(at::kHalf).contiguous() : b.value().contiguous();
  }
  fs::create_directories(path.parent_path());
  save_safetensors(path.string(), tensors, {{"format", "pt"}});
  int64_t n = 0;
  for (const auto& [k, t] : tensors) n += t.numel();
  std::printf("  %-52s %5zu tensors, %7.1f M params\n", path.string().c_str(), tensors.size(), static_cast<double>(n) / 1e6);
}

template <typename Build>
double timed(const char* what, Build build) {
  auto t = Clock::now();
  build();
  const double s = s_since(t);
  std::printf("  %-46s %7.2f s\n", what, s);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, tokenizer = "tests/fixtures/parity/models/tiny-sd/tokenizer";
  int64_t seed = 0;
  int threads = 0;
  bool time_load = false, write = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) tokenizer = argv[++i];
    else if (a == "--seed" && i + 1 < argc) seed = std::atoll(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--time-load") time_load = true;
    else if (a == "--only-time-load") time_load = true, write = false;
    else if (!a.empty() && a[0] != '-' && out.empty()) out = a;
    else out.clear(), i = argc;
  }
  if (out.empty()) {
    std::fprintf(stderr,
                 "usage: %s OUT_DIR [--tokenizer DIR] [--seed N] [--time-load] [--only-time-load] [--threads T]\n",
                 argv[0]);
    return 2;
  }
  try {
    configure_threads(threads);
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);
    const fs::path dir(out);
    if (write) {
      if (!fs::is_directory(tokenizer)) throw std::runtime_error("tokenizer folder '" + tokenizer + "' not found");
      auto t0 = Clock::now();
      std::printf("writing %s\n", dir.string().c_str());
      write_text(dir / "model_index.json", kModelIndex);
      write_text(dir / "scheduler" / "scheduler_config.json", kSchedulerConfig);
      fs::create_directories(dir / "tokenizer");
      fs::copy(tokenizer, dir / "tokenizer", fs::copy_options::overwrite_existing | fs::copy_options::recursive);
      {
        ModelConfig c = config_of(kSd15TextEncoderConfig, "SD1.5 text_encoder config");
        CLIPTextModelImpl m(CLIPTextConfig::from_config(c));
        write_text(dir / "text_encoder" / "config.json", kSd15TextEncoderConfig);
        save_fp16(m, dir / "text_encoder" / "model.safetensors");
      }
      {
        ModelConfig c = config_of(kSd15VaeConfig, "SD1.5 vae config");
        AutoencoderKLImpl m(AutoencoderKLConfig::from_config(c));
        write_text(dir / "vae" / "config.json", kSd15VaeConfig);
        save_fp16(m, dir / "vae" / "diffusion_pytorch_model.safetensors");
      }
      {
        UNet2DConditionModelImpl m(UNet2DConditionModelConfig::from_json(nlohmann::json::parse(kSd15UNetConfig), "SD1.5 unet config"));
        write_text(dir / "unet" / "config.json", kSd15UNetConfig);
        save_fp16(m, dir / "unet" / "diffusion_pytorch_model.safetensors");
      }
      std::printf("done in %.1f s, peak RSS %.0f MB\n", s_since(t0), peak_rss_mb());
    }
    if (time_load) {
      // Each module is dropped before the next is built, so the figures do not include page-cache or allocator
      // effects from a live model (the files were just written or read, so they are in the page cache).
      std::printf("load timings (%d threads): build = constructor only (random init), load = from_pretrained\n",
                  at::get_num_threads());
      const std::string folder = dir.string();
      timed("text_encoder build (CLIPTextModelImpl ctor)", [&] {
        ModelConfig c = ModelConfig::from_folder(folder, "text_encoder");
        CLIPTextModelImpl m(CLIPTextConfig::from_config(c));
      });
      timed("text_encoder load (load_clip_text_model)", [&] { load_clip_text_model(folder, "text_encoder"); });
      timed("vae build (AutoencoderKLImpl ctor)", [&] {
        ModelConfig c = ModelConfig::from_folder(folder, "vae");
        AutoencoderKLImpl m(AutoencoderKLConfig::from_config(c));
      });
      timed("vae load (AutoencoderKLImpl::from_pretrained)", [&] { AutoencoderKLImpl::from_pretrained(folder, "vae"); });
      timed("unet build (UNet2DConditionModelImpl ctor)", [&] {
        ModelConfig c = ModelConfig::from_folder(folder, "unet");
        UNet2DConditionModelImpl m(UNet2DConditionModelConfig::from_config(c));
      });
      timed("unet load (UNet2DConditionModelImpl::from_pretrained)",
            [&] { UNet2DConditionModelImpl::from_pretrained(folder, "unet"); });
      std::printf("peak RSS %.0f MB\n", peak_rss_mb());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
