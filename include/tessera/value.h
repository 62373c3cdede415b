#pragma once
/// Value: the closed set of kinds that flow through a pipeline's state.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace tessera {

/// The kinds a Value can hold. `Any` appears only in specs (accepts every kind).
enum class Kind {
  None,
  Tensor,
  Int,
  Float,
  Bool,
  String,
  IntList,
  FloatList,
  StringList,
  TensorList,
  Generator,
  Image,  ///< images [B, 3, H, W], float in [0, 1]
  Map,    ///< name → value (kwargs groups)
  Any,
};

const char* kind_name(Kind k);
/// Parses "tensor", "int", "float", "bool", "string", "int_list", … ; nullopt if unknown.
std::optional<Kind> kind_from_name(const std::string& name);
std::vector<std::string> kind_names();

/// Whether a value of kind `produced` may feed an input of kind `wanted` (ints feed floats).
bool kind_accepts(Kind wanted, Kind produced);

class Value;
using ValueMap = std::map<std::string, Value>;

/// Images as a tensor [B, 3, H, W] with values in [0, 1]; distinct from a plain tensor so specs can say which they take.
struct ImageBatch {
  at::Tensor pixels;
};

/// A tagged value. Copying is cheap (tensors and generators are handles; maps are shared).
class Value {
 public:
  Value() = default;
  Value(at::Tensor t);
  Value(int64_t v);
  Value(int v) : Value(static_cast<int64_t>(v)) {}
  Value(double v);
  Value(bool v);
  Value(std::string v);
  Value(const char* v) : Value(std::string(v)) {}
  Value(std::vector<int64_t> v);
  Value(std::vector<double> v);
  Value(std::vector<std::string> v);
  Value(std::vector<at::Tensor> v);
  Value(at::Generator g);
  Value(ImageBatch images);
  Value(ValueMap m);

  Kind kind() const;
  bool is_none() const { return kind() == Kind::None; }

  /// Typed access; throws InputError naming `what` and both kinds on a mismatch.
  const at::Tensor& tensor(const std::string& what = "value") const;
  int64_t to_int(const std::string& what = "value") const;
  double to_float(const std::string& what = "value") const;  ///< accepts Int too
  bool to_bool(const std::string& what = "value") const;
  const std::string& str(const std::string& what = "value") const;
  const std::vector<int64_t>& int_list(const std::string& what = "value") const;
  const std::vector<double>& float_list(const std::string& what = "value") const;
  const std::vector<std::string>& string_list(const std::string& what = "value") const;
  const std::vector<at::Tensor>& tensor_list(const std::string& what = "value") const;
  at::Generator generator(const std::string& what = "value") const;
  const ImageBatch& images(const std::string& what = "value") const;
  const ValueMap& map(const std::string& what = "value") const;

  /// Short human-readable form for logs and docs: `7.5`, `"a cat"`, `tensor[2, 4, 32, 32] f32`.
  std::string repr() const;

  /// Converts to `wanted` where that is lossless (Int→Float, a value → itself); throws InputError otherwise.
  Value coerced(Kind wanted, const std::string& what) const;

 private:
  using Storage = std::variant<std::monostate, at::Tensor, int64_t, double, bool, std::string, std::vector<int64_t>,
                               std::vector<double>, std::vector<std::string>, std::vector<at::Tensor>, at::Generator,
                               ImageBatch, std::shared_ptr<const ValueMap>>;
  Storage v_;
};

/// Parses command-line text (`--set name=text`) as a value of `kind`. Lists are comma-separated.
/// Throws InputError naming `what`, the expected kind and the text found.
Value parse_value(Kind kind, const std::string& text, const std::string& what);

/// Converts a YAML scalar/sequence/map to a value. With kind Any the kind is inferred
/// (int, float, bool, string, lists of those, maps). Throws InputError on mismatch.
Value value_from_yaml(const YAML::Node& node, Kind kind, const std::string& what);

/// Infers a kind from YAML (for `Any`).
Kind infer_yaml_kind(const YAML::Node& node);

}  // namespace tessera
