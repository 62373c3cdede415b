// tessera_make_random_sd35: writes a diffusers-format Stable Diffusion 3.5 medium folder with random weights (the
// published architecture of every component, tools/bench/dit_configs.h; for benchmarks — never commit the output,
// it is ~16 GB):
//
//   OUT/model_index.json                                                    StableDiffusion3Pipeline
//   OUT/transformer/config.json, diffusion_pytorch_model.safetensors        SD3Transformer2DModel, 2.2 B params
//   OUT/vae/config.json, diffusion_pytorch_model.safetensors                AutoencoderKL, 16 latent channels
//   OUT/text_encoder/config.json, model.safetensors                         CLIP ViT-L/14 with projection
//   OUT/text_encoder_2/config.json, model.safetensors                       OpenCLIP bigG/14 with projection
//   OUT/text_encoder_3/config.json, model-0000N-of-00002.safetensors,
//                      model.safetensors.index.json                         T5 v1.1 XXL encoder, 4.8 B params
//   OUT/scheduler/scheduler_config.json                                     FlowMatchEulerDiscreteScheduler, shift 3
//   OUT/tokenizer{,_2,_3}/                                                  copied (see below)
//
// Weights are bfloat16 in the files, drawn by LibTorch's default initialisation (seeded), one component at a time
// and layer by layer (tools/bench/random_weights.h), so the maker itself peaks at about one shard in bf16 (~5 GB)
// rather than a float32 T5-XXL (19 GB). Shards follow transformers' rule (a new shard when the next tensor would
// pass --max-shard-gb, default 5 GB as transformers' save_pretrained; diffusers' models stay in one file up to 10 GB).
//
// Tokenizers are tiny-sd3's by default: the CLIP ones have a 1000-id vocabulary (ids valid for the 49408-row
// embeddings) and the T5 one is a small spiece.model; the compute is the real one, only the token ids differ.
// --clip-vocab DIR (e.g. ../shared/data/clip) copies the real CLIP BPE vocabulary into tokenizer/ and tokenizer_2/.
//
//   tessera_make_random_sd35 OUT_DIR [--tokenizers DIR] [--clip-vocab DIR] [--seed N] [--threads T]
//                            [--only transformer,vae,text_encoder,text_encoder_2,text_encoder_3] [--max-shard-gb G]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tools/bench/bench_util.h"
#include "tools/bench/dit_configs.h"
#include "tools/bench/random_weights.h"
#include "tessera/runtime.h"
#include "engine/safetensors.h"
#include "models/loading/config_reader.h"
#include "models/loading/skip_init.h"
#include "models/text/clip_text_model.h"
#include "models/text/t5_encoder.h"
#include "models/transformers/transformer_sd3.h"
#include "models/vae/autoencoder_kl.h"

namespace fs = std::filesystem;
using namespace tessera;
using namespace tessera::bench;
using Clock = std::chrono::steady_clock;

namespace {

double s_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream f(path);
  f << nlohmann::json::parse(text).dump(2) << "\n";
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

ModelConfig config_of(const char* text, const std::string& name) { return ModelConfig(nlohmann::json::parse(text), name); }

std::string shard_name(const std::string& base, size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, n);
  return base + buf;
}

/// Materialises `module` (built inside SkipRandomInit) in bfloat16 layer by layer and writes it to
/// dir/base.safetensors, or — above max_shard_bytes — to shards dir/base-0000i-of-0000N.safetensors with
/// dir/base.safetensors.index.json. Each shard's tensors are released once it is written.
void write_component(torch::nn::Module& module, const fs::path& dir, const std::string& base, int64_t max_shard_bytes) {
  auto t0 = Clock::now();
  const at::ScalarType dtype = at::kBFloat16;
  const std::vector<TensorPlan> plan = plan_tensors(module, dtype);
  // Greedy split in tensor order (huggingface_hub's split_torch_state_dict_into_shards).
  std::vector<size_t> shard_of(plan.size());
  std::vector<int64_t> shard_bytes{0};
  int64_t total = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (shard_bytes.back() > 0 && shard_bytes.back() + plan[i].bytes > max_shard_bytes) shard_bytes.push_back(0);
    shard_bytes.back() += plan[i].bytes;
    shard_of[i] = shard_bytes.size() - 1;
    total += plan[i].bytes;
  }
  const size_t n_shards = shard_bytes.size();
  fs::create_directories(dir);
  std::map<std::string, at::Tensor> shard;
  nlohmann::json weight_map = nlohmann::json::object();
  size_t i = 0;
  int64_t params = 0;
  materialise(module, dtype, [&](const std::string& key, at::Tensor& t) {
    if (i >= plan.size() || plan[i].key != key)
      throw std::runtime_error("tensor order changed between planning and writing at '" + key + "'");
    shard[key] = t;
    params += t.numel();
    const std::string file = n_shards == 1 ? base + ".safetensors" : shard_name(base, shard_of[i], n_shards);
    weight_map[key] = file;
    if (i + 1 == plan.size() || shard_of[i + 1] != shard_of[i]) {
      save_safetensors((dir / file).string(), shard, {{"format", "pt"}});
      std::printf("  %-58s %5zu tensors, %6.2f GB, RSS %5.0f MB\n", (dir / file).string().c_str(), shard.size(),
                  static_cast<double>(shard_bytes[shard_of[i]]) / 1e9, current_rss_mb());
      std::fflush(stdout);
      for (auto& [k, v] : shard) v.set_data(at::empty({0}, v.options()));  // the module's tensor: release it
      shard.clear();
    }
    ++i;
  });
  if (n_shards > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream f(dir / (base + ".safetensors.index.json"));
    f << index.dump(2) << "\n";
    if (!f) throw std::runtime_error("cannot write the shard index in " + dir.string());
  }
  std::printf("  %s: %.1f M params, %.2f GB in %zu file%s, %.1f s\n", dir.filename().string().c_str(),
              static_cast<double>(params) / 1e6, static_cast<double>(total) / 1e9, n_shards, n_shards == 1 ? "" : "s",
              s_since(t0));
  std::fflush(stdout);
}

template <typename Impl, typename Config>
void write_model(const Config& config, const char* config_text, const fs::path& dir, const std::string& config_name,
                 const std::string& base, int64_t max_shard_bytes) {
  std::shared_ptr<Impl> model;
  {
    SkipRandomInit skip;  // write_component draws the values, layer by layer
    model = std::make_shared<Impl>(config);
  }
  write_text(dir / config_name, config_text);
  write_component(*model, dir, base, max_shard_bytes);
}

void copy_folder(const fs::path& from, const fs::path& to) {
  if (!fs::is_directory(from)) throw std::runtime_error("tokenizer folder '" + from.string() + "' not found");
  fs::create_directories(to);
  fs::copy(from, to, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, tokenizers = "tests/fixtures/parity/models/tiny-sd3", clip_vocab;
  int64_t seed = 0;
  int threads = 0;
  double max_shard_gb = 5.0;
  std::set<std::string> only;
  const std::set<std::string> all = {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"};
  bool bad = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--tokenizers" && has) tokenizers = argv[++i];
    else if (a == "--clip-vocab" && has) clip_vocab = argv[++i];
    else if (a == "--seed" && has) seed = std::atoll(argv[++i]);
    else if (a == "--threads" && has) threads = std::atoi(argv[++i]);
    else if (a == "--max-shard-gb" && has) max_shard_gb = std::atof(argv[++i]);
    else if (a == "--only" && has) {
      std::stringstream ss(argv[++i]);
      for (std::string c; std::getline(ss, c, ',');) {
        if (!all.count(c)) bad = true;
        only.insert(c);
      }
    } else if (!a.empty() && a[0] != '-' && out.empty()) out = a;
    else bad = true;
  }
  if (out.empty() || bad || max_shard_gb <= 0) {
    std::fprintf(stderr,
                 "usage: %s OUT_DIR [--tokenizers DIR] [--clip-vocab DIR] [--seed N] [--threads T]\n"
                 "          [--only transformer,vae,text_encoder,text_encoder_2,text_encoder_3] [--max-shard-gb G]\n",
                 argv[0]);
    return 2;
  }
  if (only.empty()) only = all;
  try {
    configure_threads(threads);
    torch::manual_seed(seed);
    const fs::path dir(out);
    const auto shard_limit = static_cast<int64_t>(max_shard_gb * 1e9);
    const int64_t diffusers_limit = 10'000'000'000;  // diffusers' save_pretrained default ("10GB")
    auto t0 = Clock::now();
    std::printf("writing %s (bf16, seed %lld, %d threads)\n", dir.string().c_str(), static_cast<long long>(seed),
                at::get_num_threads());
    write_text(dir / "model_index.json", kSd35MModelIndex);
    write_text(dir / "scheduler" / "scheduler_config.json", kSd35MSchedulerConfig);
    for (const char* t : {"tokenizer", "tokenizer_2", "tokenizer_3"}) copy_folder(fs::path(tokenizers) / t, dir / t);
    if (!clip_vocab.empty())
      for (const char* t : {"tokenizer", "tokenizer_2"}) {
        fs::remove_all(dir / t);
        copy_folder(clip_vocab, dir / t);
        fs::remove(dir / t / "README.md");
        fs::remove(dir / t / "reference_ids.json");
      }
    if (only.count("transformer"))
      write_model<SD3Transformer2DModelImpl>(
          SD3Transformer2DModelConfig::from_json(nlohmann::json::parse(kSd35MTransformerConfig), "SD3.5-M transformer"),
          kSd35MTransformerConfig, dir / "transformer", "config.json", "diffusion_pytorch_model", diffusers_limit);
    if (only.count("vae")) {
      ModelConfig c = config_of(kSd35MVaeConfig, "SD3.5-M vae config");
      write_model<AutoencoderKLImpl>(AutoencoderKLConfig::from_config(c), kSd35MVaeConfig, dir / "vae", "config.json",
                                     "diffusion_pytorch_model", diffusers_limit);
    }
    if (only.count("text_encoder")) {
      ModelConfig c = config_of(kSd35MClipLConfig, "SD3.5-M text_encoder config");
      write_model<CLIPTextModelWithProjectionImpl>(CLIPTextConfig::from_config(c), kSd35MClipLConfig,
                                                   dir / "text_encoder", "config.json", "model", shard_limit);
    }
    if (only.count("text_encoder_2")) {
      ModelConfig c = config_of(kSd35MClipGConfig, "SD3.5-M text_encoder_2 config");
      write_model<CLIPTextModelWithProjectionImpl>(CLIPTextConfig::from_config(c), kSd35MClipGConfig,
                                                   dir / "text_encoder_2", "config.json", "model", shard_limit);
    }
    if (only.count("text_encoder_3")) {
      ModelConfig c = config_of(kSd35MT5Config, "SD3.5-M text_encoder_3 config");
      write_model<T5EncoderModelImpl>(T5Config::from_config(c), kSd35MT5Config, dir / "text_encoder_3", "config.json",
                                      "model", shard_limit);
    }
    std::printf("done in %.1f s, peak RSS %.0f MB\n", s_since(t0), peak_rss_mb());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
