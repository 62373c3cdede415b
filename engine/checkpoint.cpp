#include "engine/checkpoint.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "tessera/error.h"
#include "engine/safetensors.h"

namespace tessera {

using json = nlohmann::json;

const char* checkpoint_action_name(CheckpointAction a) {
  switch (a) {
    case CheckpointAction::Save: return "save";
    case CheckpointAction::Stop: return "stop";
    case CheckpointAction::Load: return "load";
  }
  return "?";
}

CheckpointRequest parse_checkpoint_request(const std::string& text) {
  const std::string form = "expected NAME:save|stop|load[=FILE], e.g. denoise:save or encode:load=enc.safetensors";
  const auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0)
    throw UsageError("bad --checkpoint '" + text + "': no block name before ':'", {}, {}, form);
  CheckpointRequest r;
  r.block_path = text.substr(0, colon);
  for (char c : r.block_path)
    if (std::isspace(static_cast<unsigned char>(c)))
      throw UsageError("bad --checkpoint '" + text + "': block path '" + r.block_path + "' contains a space", {}, {},
                       form);
  std::string rest = text.substr(colon + 1);
  const auto eq = rest.find('=');
  const std::string action = rest.substr(0, eq);
  if (action == "save") r.action = CheckpointAction::Save;
  else if (action == "stop") r.action = CheckpointAction::Stop;
  else if (action == "load") r.action = CheckpointAction::Load;
  else {
    const std::string close = did_you_mean(action, {"save", "stop", "load"});
    throw UsageError("bad --checkpoint '" + text + "': unknown action '" + action + "'", {}, {},
                     close.empty() ? form : close + "; " + form);
  }
  if (eq != std::string::npos) {
    r.file = rest.substr(eq + 1);
    if (r.file.empty()) throw UsageError("bad --checkpoint '" + text + "': empty file after '='", {}, {}, form);
  } else {
    r.file = r.block_path + ".safetensors";
  }
  return r;
}

std::string checkpoint_step_file(const std::string& file, int64_t step) {
  const auto slash = file.rfind('/');
  const auto dot = file.rfind('.');
  const std::string tag = ".step" + std::to_string(step);
  // A dot that starts the base name (".hidden") is not an extension.
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  if (dot == std::string::npos || dot <= base) return file + tag;
  return file.substr(0, dot) + tag + file.substr(dot);
}

// ---------------------------------------------------------------- encoding

namespace {

json encode_float(double d) {
  // JSON has no nan/inf (nlohmann would write null); strings keep them exact.
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return d;
}

std::optional<double> decode_float(const json& j) {
  if (j.is_number()) return j.get<double>();
  if (!j.is_string()) return std::nullopt;
  const std::string s = j.get<std::string>();
  if (s == "nan") return std::nan("");
  if (s == "inf") return INFINITY;
  if (s == "-inf") return -INFINITY;
  return std::nullopt;
}

/// Turns values into JSON entries, collecting their tensors under unique names.
struct Encoder {
  const std::string& file;
  std::map<std::string, at::Tensor> tensors;
  std::map<const c10::GeneratorImpl*, std::string> generators;  ///< shared generators are stored once

  void add_tensor(const std::string& key, at::Tensor t, const std::string& what) {
    if (tensors.count(key))
      throw CheckpointError("value '" + what + "' needs the tensor name '" + key +
                                "', which another value's element already uses; rename one of them",
                            {file});
    tensors.emplace(key, std::move(t));
  }

  json tensor_entry(const char* kind, const at::Tensor& t, const std::string& key, const std::string& what) {
    json e = {{"kind", kind}};
    if (!t.defined()) {
      e["undefined"] = true;
      return e;
    }
    try {
      safetensors_dtype_name(t.scalar_type());
    } catch (const OutputError&) {
      throw CheckpointError("value '" + what + "' is a " + c10::toString(t.scalar_type()) +
                                " tensor, which safetensors cannot store",
                            {file});
    }
    e["tensor"] = key;
    e["device"] = t.device().str();
    add_tensor(key, t.detach(), what);
    return e;
  }

  json encode(const Value& v, const std::string& key) {
    switch (v.kind()) {
      case Kind::None: return {{"kind", "none"}};
      case Kind::Tensor: return tensor_entry("tensor", v.tensor(), key, key);
      case Kind::Image: return tensor_entry("image", v.images().pixels, key, key);
      case Kind::Int: return {{"kind", "int"}, {"value", v.to_int()}};
      case Kind::Float: return {{"kind", "float"}, {"value", encode_float(v.to_float())}};
      case Kind::Bool: return {{"kind", "bool"}, {"value", v.to_bool()}};
      case Kind::String: return {{"kind", "string"}, {"value", v.str()}};
      case Kind::IntList: return {{"kind", "int_list"}, {"value", v.int_list()}};
      case Kind::StringList: return {{"kind", "string_list"}, {"value", v.string_list()}};
      case Kind::FloatList: {
        json a = json::array();
        for (double d : v.float_list()) a.push_back(encode_float(d));
        return {{"kind", "float_list"}, {"value", a}};
      }
      case Kind::TensorList: {
        json items = json::array();
        const auto& list = v.tensor_list();
        for (size_t i = 0; i < list.size(); ++i)
          items.push_back(tensor_entry("tensor", list[i], key + "." + std::to_string(i), key));
        return {{"kind", "tensor_list"}, {"items", items}};
      }
      case Kind::Generator: {
        at::Generator g = v.generator();
        if (g.device().type() != at::kCPU)
          throw CheckpointError("value '" + key + "' is a " + g.device().str() +
                                    " generator; only CPU generators can be checkpointed",
                                {file});
        auto it = generators.find(g.unsafeGetGeneratorImpl());
        if (it != generators.end()) return {{"kind", "generator"}, {"tensor", it->second}};
        at::Tensor st;
        {
          std::lock_guard<std::mutex> lock(g.mutex());  // the state must not change while it is copied
          st = g.get_state();
        }
        add_tensor(key, st, key);
        generators.emplace(g.unsafeGetGeneratorImpl(), key);
        return {{"kind", "generator"}, {"tensor", key}};
      }
      case Kind::Map: {
        json entries = json::object();
        for (const auto& [k, item] : v.map()) entries[k] = encode(item, key + "." + k);
        return {{"kind", "map"}, {"entries", entries}};
      }
      case Kind::Any: break;
    }
    throw CheckpointError("value '" + key + "' has kind " + kind_name(v.kind()) + ", which cannot be checkpointed",
                          {file});
  }
};

/// Rebuilds values from JSON entries and the file's tensors. Every malformation is a CheckpointError.
struct Decoder {
  const std::string& path;
  const SafetensorsFile& file;
  std::map<std::string, at::Generator> generators;  ///< by state tensor name: shared generators stay shared

  [[noreturn]] void fail(const std::string& what, const std::string& msg) const {
    throw CheckpointError("value '" + what + "' in tessera.state: " + msg, {path});
  }

  const json& array(const json& e, const char* key, const std::string& what) const {
    const json& a = e.at(key);
    if (!a.is_array()) fail(what, std::string("'") + key + "' must be a list");
    return a;
  }

  double to_float(const json& j, const std::string& what) const {
    auto d = decode_float(j);
    if (!d) fail(what, j.dump() + " is not a float");
    return *d;
  }

  at::Tensor read_tensor(const json& e, const std::string& what) {
    if (e.value("undefined", false)) return at::Tensor();
    const std::string key = e.at("tensor").get<std::string>();
    if (!file.has(key))
      throw CheckpointError("tensor '" + key + "' (of value '" + what + "') is named by tessera.state but missing from the file",
                            {path});
    // Copy out of the mapping: the state must own memory that blocks may resize or keep after the file goes.
    at::Tensor t = file.tensor(key).clone();
    const std::string dev = e.value("device", std::string("cpu"));
    if (dev != "cpu") {
      try {
        t = t.to(at::Device(dev));
      } catch (const std::exception&) {
        spdlog::warn("checkpoint {}: value '{}' was saved on {}, which is not available; keeping it on the CPU", path,
                     what, dev);
      }
    }
    return t;
  }

  Value decode(const json& e, const std::string& what) {
    if (!e.is_object() || !e.contains("kind") || !e["kind"].is_string()) fail(what, "entry needs a string 'kind'");
    const std::string kind = e["kind"].get<std::string>();
    try {
      if (kind == "none") return Value();
      if (kind == "tensor") return Value(read_tensor(e, what));
      if (kind == "image") return Value(ImageBatch{read_tensor(e, what)});
      if (kind == "int") {
        if (!e.at("value").is_number_integer()) fail(what, "int value is not an integer");
        return Value(e["value"].get<int64_t>());
      }
      if (kind == "float") return Value(to_float(e.at("value"), what));
      if (kind == "bool") return Value(e.at("value").get<bool>());
      if (kind == "string") return Value(e.at("value").get<std::string>());
      if (kind == "int_list") {
        for (const auto& x : array(e, "value", what))
          if (!x.is_number_integer()) fail(what, "int_list holds a non-integer");
        return Value(e["value"].get<std::vector<int64_t>>());
      }
      if (kind == "string_list") return Value(array(e, "value", what).get<std::vector<std::string>>());
      if (kind == "float_list") {
        std::vector<double> out;
        for (const auto& x : array(e, "value", what)) out.push_back(to_float(x, what));
        return Value(std::move(out));
      }
      if (kind == "tensor_list") {
        std::vector<at::Tensor> out;
        for (const auto& item : array(e, "items", what)) out.push_back(read_tensor(item, what));
        return Value(std::move(out));
      }
      if (kind == "generator") {
        const std::string key = e.at("tensor").get<std::string>();
        auto it = generators.find(key);
        if (it != generators.end()) return Value(it->second);
        if (!file.has(key))
          throw CheckpointError("generator state tensor '" + key + "' (of value '" + what +
                                    "') is named by tessera.state but missing from the file",
                                {path});
        at::Generator g = at::detail::createCPUGenerator();
        try {
          g.set_state(file.tensor(key).clone());
        } catch (const c10::Error& err) {
          fail(what, "generator state tensor '" + key + "' is not a CPU generator state: " + err.what_without_backtrace());
        }
        generators.emplace(key, g);
        return Value(g);
      }
      if (kind == "map") {
        ValueMap m;
        const json& entries = e.at("entries");
        if (!entries.is_object()) fail(what, "map entries must be an object");
        for (auto it = entries.begin(); it != entries.end(); ++it) m[it.key()] = decode(it.value(), what + "." + it.key());
        return Value(std::move(m));
      }
    } catch (const json::exception& err) {
      fail(what, std::string("malformed ") + kind + " entry: " + err.what());
    } catch (const ModelLoadError& err) {
      fail(what, err.message());
    }
    fail(what, "unknown kind '" + kind + "'");
  }
};

/// Deep copy: tensors cloned, generators cloned (sharing preserved), so an injected state never aliases the
/// pristine loaded one and an observer can resume several runs identically.
Value deep_copy(const Value& v, std::map<const c10::GeneratorImpl*, at::Generator>& gens) {
  switch (v.kind()) {
    case Kind::Tensor: return v.tensor().defined() ? Value(v.tensor().clone()) : v;
    case Kind::Image: return Value(ImageBatch{v.images().pixels.clone()});
    case Kind::TensorList: {
      std::vector<at::Tensor> out;
      for (const auto& t : v.tensor_list()) out.push_back(t.defined() ? t.clone() : t);
      return Value(std::move(out));
    }
    case Kind::Generator: {
      at::Generator g = v.generator();
      auto it = gens.find(g.unsafeGetGeneratorImpl());
      if (it == gens.end()) it = gens.emplace(g.unsafeGetGeneratorImpl(), g.clone()).first;
      return Value(it->second);
    }
    case Kind::Map: {
      ValueMap m;
      for (const auto& [k, item] : v.map()) m[k] = deep_copy(item, gens);
      return Value(std::move(m));
    }
    default: return v;
  }
}

}  // namespace

void save_state(const std::string& path, const PipelineState& state, const std::map<std::string, std::string>& meta) {
  if (meta.count(kCheckpointStateKey))
    throw CheckpointError(std::string("metadata key '") + kCheckpointStateKey + "' is reserved", {path});
  Encoder enc{path, {}, {}};
  json values = json::object();
  json tags = json::object();
  for (const auto& [name, v] : state.values()) {
    values[name] = enc.encode(v, name);
    const auto& t = state.tags(name);
    if (!t.empty()) tags[name] = std::vector<std::string>(t.begin(), t.end());
  }
  json doc = {{"version", 1}, {"values", values}, {"tags", tags}};
  std::map<std::string, std::string> all = meta;
  try {
    all[kCheckpointStateKey] = doc.dump();
  } catch (const json::exception& e) {
    throw CheckpointError(std::string("a string value is not valid UTF-8 and cannot be stored: ") + e.what(), {path});
  }
  save_safetensors(path, enc.tensors, all);
}

namespace {
std::unique_ptr<SafetensorsFile> open_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw CheckpointError("checkpoint file not found", {path}, {},
                          "write one first with --checkpoint NAME:save=" + path);
  try {
    return std::make_unique<SafetensorsFile>(path);
  } catch (const ModelLoadError& e) {
    throw CheckpointError("not a readable checkpoint: " + e.message(), {path});
  }
}
}  // namespace

PipelineState load_state(const std::string& path) {
  auto file = open_checkpoint(path);
  auto it = file->metadata().find(kCheckpointStateKey);
  if (it == file->metadata().end())
    throw CheckpointError(std::string("the file has no '") + kCheckpointStateKey +
                              "' metadata: it is a safetensors file but not a Tessera checkpoint",
                          {path});
  json doc;
  try {
    doc = json::parse(it->second);
  } catch (const json::exception& e) {
    throw CheckpointError(std::string("tessera.state is not valid JSON: ") + e.what(), {path});
  }
  if (!doc.is_object() || !doc.contains("values") || !doc["values"].is_object())
    throw CheckpointError("tessera.state lacks its 'values' object", {path});
  if (!doc.value("version", json(1)).is_number_integer() || doc.value("version", 1) > 1)
    throw CheckpointError("tessera.state version " + doc["version"].dump() + " is newer than this Tessera reads (1)",
                          {path});
  Decoder dec{path, *file, {}};
  PipelineState state;
  const json& tags = doc.contains("tags") ? doc["tags"] : json::object();
  if (!tags.is_object()) throw CheckpointError("tessera.state 'tags' must be an object", {path});
  for (auto v = doc["values"].begin(); v != doc["values"].end(); ++v) {
    Value value = dec.decode(v.value(), v.key());
    state.set(v.key(), value);
    if (!tags.contains(v.key())) continue;
    const json& t = tags[v.key()];
    if (!t.is_array()) throw CheckpointError("tags of '" + v.key() + "' must be a list of strings", {path});
    for (const auto& tag : t) {
      if (!tag.is_string()) throw CheckpointError("tags of '" + v.key() + "' must be a list of strings", {path});
      state.set(v.key(), value, tag.get<std::string>());
    }
  }
  return state;
}

std::map<std::string, std::string> checkpoint_metadata(const std::string& path) {
  auto meta = open_checkpoint(path)->metadata();
  meta.erase(kCheckpointStateKey);
  return meta;
}

// ---------------------------------------------------------------- validation

void check_checkpoint_paths(const Block& root, const std::vector<CheckpointRequest>& requests) {
  struct Node {
    const Block* block;
    std::vector<const Block*> ancestors;
    size_t order;
  };
  std::map<std::string, Node> nodes;
  std::map<const Block*, std::string> path_of;
  std::vector<std::string> all;
  walk_blocks(root, [&](const std::string& path, const Block& b, const std::vector<const Block*>& anc) {
    nodes.emplace(path, Node{&b, anc, all.size()});
    path_of.emplace(&b, path);
    all.push_back(path);
  });
  const CheckpointRequest* load = nullptr;
  for (const auto& r : requests) {
    const std::string what = std::string("checkpoint '") + r.block_path + ":" + checkpoint_action_name(r.action) + "'";
    if (r.block_path.empty()) throw CheckpointError(what + " names no block", {}, {}, "use a dotted block path");
    auto it = nodes.find(r.block_path);
    if (it == nodes.end()) {
      std::vector<std::string> candidates(all.begin() + 1, all.end());
      std::string hint = did_you_mean(r.block_path, candidates);
      if (hint.empty()) hint = "`tessera plan` lists the block paths";
      throw CheckpointError(what + ": no block has the path '" + r.block_path + "'", {}, {}, hint);
    }
    if (r.action != CheckpointAction::Load) continue;
    if (load)
      throw CheckpointError(what + ": only one checkpoint can be loaded per run (already loading at '" +
                            load->block_path + "')");
    load = &r;
    for (const Block* a : it->second.ancestors) {
      if (a->kind() == BlockKind::Sequential) continue;
      const std::string& ap = path_of[a];
      throw CheckpointError(what + ": it is inside the " + block_kind_name(a->kind()) + " block '" +
                                (ap.empty() ? std::string("(root)") : ap) +
                                "', and a resumed run can only re-enter plain sequential blocks (it cannot restore "
                                "which loop iteration or branch was running)",
                            {}, r.block_path,
                            ap.empty() ? std::string() : "load at '" + ap + "' (after the whole block) instead");
    }
  }
  if (!load) return;
  const size_t load_order = nodes.at(load->block_path).order;
  for (const auto& r : requests)
    if (r.action != CheckpointAction::Load && nodes.at(r.block_path).order <= load_order)
      throw CheckpointError(std::string("checkpoint '") + r.block_path + ":" + checkpoint_action_name(r.action) +
                            "' would never fire: the run resumes after '" + load->block_path +
                            "', so that block does not run");
}

// ---------------------------------------------------------------- observer

CheckpointObserver::CheckpointObserver(std::vector<CheckpointRequest> requests, std::map<std::string, std::string> meta)
    : requests_(std::move(requests)), meta_(std::move(meta)) {
  for (size_t i = 0; i < requests_.size(); ++i) {
    auto& r = requests_[i];
    if (r.file.empty()) r.file = r.block_path + ".safetensors";
    if (r.action != CheckpointAction::Load) continue;
    if (load_ >= 0) throw CheckpointError("only one checkpoint can be loaded per run");
    load_ = static_cast<int>(i);
  }
  if (load_ < 0) return;
  const auto& r = requests_[load_];
  loaded_ = std::make_shared<const PipelineState>(load_state(r.file));
  // A state from another block would silently resume from the wrong place.
  auto meta_in = checkpoint_metadata(r.file);
  auto b = meta_in.find("tessera.block");
  if (b != meta_in.end() && b->second != r.block_path)
    throw CheckpointError("the checkpoint was written after block '" + b->second + "', not '" + r.block_path + "'",
                          {r.file}, {}, "load it with --checkpoint " + b->second + ":load=" + r.file);
}

std::string CheckpointObserver::resume_after() const { return load_ < 0 ? std::string() : requests_[load_].block_path; }

std::function<void(PipelineState&)> CheckpointObserver::on_resume() const {
  if (!loaded_) return {};
  std::shared_ptr<const PipelineState> loaded = loaded_;
  return [loaded](PipelineState& state) {
    std::map<const c10::GeneratorImpl*, at::Generator> gens;
    for (const auto& [name, v] : loaded->values()) {
      Value copy = deep_copy(v, gens);
      state.set(name, copy);
      for (const auto& tag : loaded->tags(name)) state.set(name, copy, tag);
    }
  };
}

void CheckpointObserver::attach(ExecContext& ctx) {
  open_.clear();
  ends_.clear();
  ctx.observers.push_back(this);
  if (load_ >= 0) {
    ctx.resume_after = resume_after();
    ctx.on_resume = on_resume();
  }
}

void CheckpointObserver::on_block_start(const std::string&, const Block& block, PipelineState&) {
  open_.push_back(block.kind());
}

void CheckpointObserver::on_block_end(const std::string& path, const Block& block, PipelineState& state) {
  if (!open_.empty()) open_.pop_back();
  bool in_loop = false;
  for (BlockKind k : open_) in_loop = in_loop || k == BlockKind::Loop;
  const CheckpointRequest* stop = nullptr;
  bool matched = false;
  const int64_t k = ends_[path];
  for (const auto& r : requests_) {
    if (r.block_path != path || r.action == CheckpointAction::Load) continue;
    matched = true;
    auto meta = meta_;
    meta["tessera.block"] = path;
    if (r.action == CheckpointAction::Stop) {
      if (!stop) stop = &r;
      continue;
    }
    std::string file = r.file;
    if (in_loop) {
      file = checkpoint_step_file(r.file, k);
      meta["tessera.step"] = std::to_string(k);
    }
    save_state(file, state, meta);
    written_.push_back(file);
    spdlog::info("checkpoint: state after '{}' written to {}", path, file);
  }
  if (matched) ends_[path] = k + 1;
  if (stop) {
    auto meta = meta_;
    meta["tessera.block"] = path;
    save_state(stop->file, state, meta);
    written_.push_back(stop->file);
    spdlog::info("checkpoint: state after '{}' written to {}; stopping", path, stop->file);
    throw StopRun{path, stop->file};
  }
}

}  // namespace tessera
