#pragma once
/// PipelineState (the flat store shared by all blocks) and BlockState (one leaf block's typed view of it).
#include <map>
#include <set>
#include <string>
#include <vector>

#include <tessera/spec.h>
#include <tessera/value.h>

namespace tessera {

/// Flat name → value store, plus sticky group tags: once a name is tagged with a kwargs_type
/// (e.g. `denoiser_input_fields`) it keeps the tag, so a block can take "all tagged values" as one input.
class PipelineState {
 public:
  void set(const std::string& name, Value value, const std::string& kwargs_type = {});
  /// Value or none when absent.
  const Value& get(const std::string& name) const;
  bool has(const std::string& name) const;  ///< present and not none
  void erase(const std::string& name);
  /// All present values tagged `kwargs_type`.
  ValueMap get_by_kwargs(const std::string& kwargs_type) const;
  const std::set<std::string>& tags(const std::string& name) const;
  const std::map<std::string, Value>& values() const { return values_; }
  std::vector<std::string> names() const;

 private:
  std::map<std::string, Value> values_;
  std::map<std::string, std::set<std::string>> tags_;
};

/// The typed view a leaf block sees: exactly its declared inputs (defaults applied, kinds checked).
/// Reading an undeclared name or writing an undeclared output is a SpecError; after the block runs,
/// commit() checks that every declared output was set and writes outputs (and replaced inputs) back.
class BlockState {
 public:
  BlockState(const BlockSpec& spec, const PipelineState& state, std::string block_path);

  const Value& get(const std::string& name) const;
  bool has(const std::string& name) const;  ///< declared, present and not none
  /// Whether the block's spec declares `name` as an input (helpers shared by blocks with different specs).
  bool declares_input(const std::string& name) const { return spec_.find_input(name) != nullptr; }
  const at::Tensor& tensor(const std::string& name) const { return get(name).tensor(name); }
  int64_t get_int(const std::string& name) const { return get(name).to_int(name); }
  double get_float(const std::string& name) const { return get(name).to_float(name); }
  bool get_bool(const std::string& name) const { return get(name).to_bool(name); }
  const std::string& get_string(const std::string& name) const { return get(name).str(name); }

  /// Sets a declared output, or replaces a declared input. Kind-checked against the spec.
  void set(const std::string& name, Value value);

  /// Checks outputs and writes what the block set back into `state`.
  void commit(PipelineState& state) const;
  const std::string& block_path() const { return path_; }

 private:
  const BlockSpec& spec_;
  std::string path_;
  std::map<std::string, Value> inputs_;
  std::map<std::string, Value> written_;
};

}  // namespace tessera
