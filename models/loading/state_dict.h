#pragma once
/// Strict state-dict loading from safetensors files into a torch::nn::Module.
///
///   AutoencoderKL vae(options);   // parameters exist with their final shapes
///   load_state_dict(*vae, resolve_weight_files(dir, kDiffusersWeightsName, ""));
///
/// Cost note: LibTorch's torch::nn layers randomly initialise their parameters in their constructors and the
/// C++ frontend has no meta device or skip-init switch, so building a model pays for one random fill of every
/// parameter (roughly 1-2 s per billion parameters on a CPU). Loading itself then costs no extra copy where it
/// can: a file tensor that already has the wanted dtype replaces the parameter's storage (set_data) and stays a
/// view of the memory-mapped file (copy-on-write, paged in on first use); other dtypes are converted once.
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tessera {

/// Options of load_state_dict beyond the files.
struct LoadStateDictOptions {
  /// Every floating-point tensor is converted to this dtype (F16/BF16 files load as float32 by default).
  at::ScalarType dtype = at::kFloat;
  /// Keys that may be absent on either side without an error: a file tensor matching one is skipped when the
  /// module lacks it, and a module tensor matching one keeps its value when the files lack it. An entry matches a
  /// key equal to it or ending in "." + entry (e.g. "position_ids", a buffer transformers does not persist in
  /// newer checkpoints).
  std::vector<std::string> ignore;
  /// How many problems one ModelLoadError lists before "… and N more".
  size_t max_problems = 10;
};

/// Loads every parameter and buffer of `module` (names as module.named_parameters()/named_buffers(), i.e. the
/// checkpoint keys when submodules are registered under them) from `files`, strictly: a tensor missing from the
/// files, a file tensor the module lacks, a shape mismatch or a tensor present in two files is a problem, and
/// all problems found (up to options.max_problems) are reported in one ModelLoadError, each naming the tensor,
/// both shapes and the file. Nothing is modified when there is any problem. Runs under torch::NoGradGuard.
void load_state_dict(torch::nn::Module& module, const std::vector<std::string>& files,
                     const LoadStateDictOptions& options);

/// A tensor to load from memory rather than from a file list: converted single-file checkpoints (models/loading/
/// single_file.h) hand over views of their mapped file under diffusers names.
struct SourceTensor {
  at::Tensor tensor;
  /// Where it came from, for messages: "file.safetensors: model.diffusion_model.out.2.weight".
  std::string origin;
  /// Called once a converted copy replaces the tensor (a dtype change), to drop the file pages it views; may be
  /// empty.
  std::function<void()> release;
};

/// Same contract as the file overload, from named tensors; `source` names them in the summary ("the file X").
void load_state_dict(torch::nn::Module& module, const std::map<std::string, SourceTensor>& tensors,
                     const LoadStateDictOptions& options, const std::string& source);

/// Shorthand with a dtype only (no ignore list).
void load_state_dict(torch::nn::Module& module, const std::vector<std::string>& files,
                     at::ScalarType dtype = at::kFloat);

/// Every tensor of `files` by name (views of the mapped files; dtype unchanged). ModelLoadError when a name
/// appears in two files.
std::map<std::string, at::Tensor> read_safetensors_files(const std::vector<std::string>& files);

/// Bytes held by a module's parameters and buffers (for Component::nbytes()).
size_t module_nbytes(const torch::nn::Module& module);

}  // namespace tessera
