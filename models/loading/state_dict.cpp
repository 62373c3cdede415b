#include "models/loading/state_dict.h"

#include <torch/torch.h>

#include <memory>
#include <sstream>

#include "tessera/error.h"
#include "engine/safetensors.h"

namespace tessera {

namespace {

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

bool ignored(const std::string& key, const std::vector<std::string>& ignore) {
  for (const auto& entry : ignore) {
    if (key == entry) return true;
    if (key.size() > entry.size() + 1 && key.compare(key.size() - entry.size(), entry.size(), entry) == 0 &&
        key[key.size() - entry.size() - 1] == '.')
      return true;
  }
  return false;
}

// A tensor to load: its shape (known before any data is read), where it comes from, how to get it and how to
// drop the memory it views once a converted copy exists.
struct Candidate {
  std::vector<int64_t> shape;
  std::string origin;
  std::function<at::Tensor()> get;
  std::function<void()> release;
};

void load_candidates(torch::nn::Module& module, const std::map<std::string, Candidate>& in_files,
                     std::vector<std::string> problems, const LoadStateDictOptions& options,
                     const std::string& source, const SourceLoc& where);

}  // namespace

std::map<std::string, at::Tensor> read_safetensors_files(const std::vector<std::string>& files) {
  std::map<std::string, at::Tensor> out;
  std::map<std::string, std::string> owner;
  for (const auto& path : files) {
    SafetensorsFile f(path);
    for (const auto& name : f.names()) {
      if (owner.count(name))
        throw ModelLoadError("tensor '" + name + "' is in both " + owner[name] + " and " + path);
      owner[name] = path;
      out[name] = f.tensor(name);
    }
  }
  return out;
}

void load_state_dict(torch::nn::Module& module, const std::vector<std::string>& files, at::ScalarType dtype) {
  LoadStateDictOptions o;
  o.dtype = dtype;
  load_state_dict(module, files, o);
}

void load_state_dict(torch::nn::Module& module, const std::vector<std::string>& files,
                     const LoadStateDictOptions& options) {
  if (files.empty()) throw ModelLoadError("no weight files given for " + module.name());
  // Headers first: every problem is found before any tensor is touched.
  std::map<std::string, Candidate> in_files;
  std::vector<std::string> problems;
  for (const auto& path : files) {
    auto f = std::make_shared<SafetensorsFile>(path);
    for (const auto& name : f->names()) {
      auto it = in_files.find(name);
      if (it != in_files.end()) {
        problems.push_back("tensor '" + name + "' is in two files: " + it->second.origin + " and " + path);
        continue;
      }
      in_files[name] = Candidate{f->entry(name).shape, path, [f, name] { return f->tensor(name); },
                                 [f, name] { f->release(name); }};
    }
  }
  load_candidates(module, in_files, std::move(problems), options,
                  files.size() == 1 ? files[0] : std::to_string(files.size()) + " files",
                  SourceLoc{files.size() == 1 ? files[0] : std::string()});
}

void load_state_dict(torch::nn::Module& module, const std::map<std::string, SourceTensor>& tensors,
                     const LoadStateDictOptions& options, const std::string& source) {
  std::map<std::string, Candidate> in;
  for (const auto& [name, t] : tensors) {
    at::Tensor tensor = t.tensor;
    in[name] = Candidate{tensor.sizes().vec(), t.origin, [tensor] { return tensor; }, t.release};
  }
  load_candidates(module, in, {}, options, source, SourceLoc{source});
}

namespace {

void load_candidates(torch::nn::Module& module, const std::map<std::string, Candidate>& in_files,
                     std::vector<std::string> problems, const LoadStateDictOptions& options,
                     const std::string& source, const SourceLoc& where) {
  std::map<std::string, at::Tensor> targets;  // parameters and buffers by checkpoint key
  for (const auto& p : module.named_parameters(/*recurse=*/true)) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) targets[b.key()] = b.value();

  std::vector<std::string> missing, unexpected;
  for (const auto& [name, target] : targets) {
    auto it = in_files.find(name);
    if (it == in_files.end()) {
      if (!ignored(name, options.ignore)) missing.push_back(name);
      continue;
    }
    const auto& shape = it->second.shape;
    if (c10::IntArrayRef(shape) != target.sizes())
      problems.push_back("tensor '" + name + "' has shape " + shape_str(shape) + " in " + it->second.origin +
                         " but the model expects " + shape_str(target.sizes()));
  }
  for (const auto& [name, ft] : in_files)
    if (!targets.count(name) && !ignored(name, options.ignore)) unexpected.push_back(name);

  for (const auto& name : missing) {
    std::string hint = did_you_mean(name, unexpected);
    problems.push_back("tensor '" + name + "' " + shape_str(targets[name].sizes()) + " is missing from " + source +
                       (hint.empty() ? "" : " (" + hint + ")"));
  }
  for (const auto& name : unexpected) {
    const auto& ft = in_files.at(name);
    problems.push_back("tensor '" + name + "' " + shape_str(ft.shape) + " in " + ft.origin +
                       " is not a parameter or buffer of the model");
  }

  if (!problems.empty()) {
    std::ostringstream msg;
    const size_t other = problems.size() - missing.size() - unexpected.size();
    msg << problems.size() << " state-dict problem" << (problems.size() == 1 ? "" : "s") << " loading "
        << (module.name().empty() ? "the model" : module.name()) << " (" << missing.size() << " missing, "
        << unexpected.size() << " unexpected, " << other << " mis-shaped or duplicated):";
    size_t shown = std::min(problems.size(), options.max_problems);
    for (size_t i = 0; i < shown; ++i) msg << "\n  - " << problems[i];
    if (problems.size() > shown) msg << "\n  … and " << problems.size() - shown << " more";
    throw ModelLoadError(msg.str(), where, {}, "the weights do not match the model built from config.json");
  }

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = in_files.find(name);
    if (it == in_files.end()) continue;  // ignored
    at::Tensor src = it->second.get();
    at::ScalarType want = at::isFloatingType(src.scalar_type()) ? options.dtype : target.scalar_type();
    if (src.scalar_type() != want) {
      src = src.to(want);
      if (it->second.release) it->second.release();  // the converted copy is what stays: drop the file's pages
    }
    if (!src.is_contiguous()) src = src.contiguous();
    if (target.device() != src.device()) {
      target.copy_(src);
    } else {
      // Replaces the storage: no copy (the mapped file's pages back the parameter, copy-on-write).
      target.set_data(src);
    }
  }
}

}  // namespace

size_t module_nbytes(const torch::nn::Module& module) {
  size_t total = 0;
  for (const auto& p : module.parameters(true)) total += p.numel() * p.element_size();
  for (const auto& b : module.buffers(true)) total += b.numel() * b.element_size();
  return total;
}

}  // namespace tessera
