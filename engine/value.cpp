#include "tessera/value.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "tessera/error.h"

namespace tessera {

namespace {
struct KindName {
  Kind kind;
  const char* name;
};
const KindName kKindNames[] = {
    {Kind::None, "none"},           {Kind::Tensor, "tensor"},         {Kind::Int, "int"},
    {Kind::Float, "float"},         {Kind::Bool, "bool"},             {Kind::String, "string"},
    {Kind::IntList, "int_list"},    {Kind::FloatList, "float_list"},  {Kind::StringList, "string_list"},
    {Kind::TensorList, "tensor_list"}, {Kind::Generator, "generator"}, {Kind::Image, "image"},
    {Kind::Map, "map"},             {Kind::Any, "any"},
};

[[noreturn]] void mismatch(const std::string& what, Kind wanted, Kind found) {
  throw InputError("'" + what + "' should be " + kind_name(wanted) + " but is " + kind_name(found));
}
}  // namespace

const char* kind_name(Kind k) {
  for (const auto& kn : kKindNames)
    if (kn.kind == k) return kn.name;
  return "?";
}

std::optional<Kind> kind_from_name(const std::string& name) {
  for (const auto& kn : kKindNames)
    if (name == kn.name) return kn.kind;
  return std::nullopt;
}

std::vector<std::string> kind_names() {
  std::vector<std::string> out;
  for (const auto& kn : kKindNames) out.emplace_back(kn.name);
  return out;
}

bool kind_accepts(Kind wanted, Kind produced) {
  if (wanted == Kind::Any || produced == Kind::Any || wanted == produced) return true;
  if (wanted == Kind::Float && produced == Kind::Int) return true;
  if (wanted == Kind::FloatList && produced == Kind::IntList) return true;
  return false;
}

Value::Value(at::Tensor t) : v_(std::move(t)) {}
Value::Value(int64_t v) : v_(v) {}
Value::Value(double v) : v_(v) {}
Value::Value(bool v) : v_(v) {}
Value::Value(std::string v) : v_(std::move(v)) {}
Value::Value(std::vector<int64_t> v) : v_(std::move(v)) {}
Value::Value(std::vector<double> v) : v_(std::move(v)) {}
Value::Value(std::vector<std::string> v) : v_(std::move(v)) {}
Value::Value(std::vector<at::Tensor> v) : v_(std::move(v)) {}
Value::Value(at::Generator g) : v_(std::move(g)) {}
Value::Value(ImageBatch images) : v_(std::move(images)) {}
Value::Value(ValueMap m) : v_(std::make_shared<const ValueMap>(std::move(m))) {}

Kind Value::kind() const {
  switch (v_.index()) {
    case 0: return Kind::None;
    case 1: return Kind::Tensor;
    case 2: return Kind::Int;
    case 3: return Kind::Float;
    case 4: return Kind::Bool;
    case 5: return Kind::String;
    case 6: return Kind::IntList;
    case 7: return Kind::FloatList;
    case 8: return Kind::StringList;
    case 9: return Kind::TensorList;
    case 10: return Kind::Generator;
    case 11: return Kind::Image;
    case 12: return Kind::Map;
  }
  return Kind::None;
}

#define TESSERA_VALUE_GET(Type, KindV)                     \
  if (auto* p = std::get_if<Type>(&v_)) return *p;         \
  mismatch(what, KindV, kind());

const at::Tensor& Value::tensor(const std::string& what) const { TESSERA_VALUE_GET(at::Tensor, Kind::Tensor) }
int64_t Value::to_int(const std::string& what) const { TESSERA_VALUE_GET(int64_t, Kind::Int) }
bool Value::to_bool(const std::string& what) const { TESSERA_VALUE_GET(bool, Kind::Bool) }
const std::string& Value::str(const std::string& what) const { TESSERA_VALUE_GET(std::string, Kind::String) }
const std::vector<int64_t>& Value::int_list(const std::string& what) const {
  TESSERA_VALUE_GET(std::vector<int64_t>, Kind::IntList)
}
const std::vector<double>& Value::float_list(const std::string& what) const {
  TESSERA_VALUE_GET(std::vector<double>, Kind::FloatList)
}
const std::vector<std::string>& Value::string_list(const std::string& what) const {
  TESSERA_VALUE_GET(std::vector<std::string>, Kind::StringList)
}
const std::vector<at::Tensor>& Value::tensor_list(const std::string& what) const {
  TESSERA_VALUE_GET(std::vector<at::Tensor>, Kind::TensorList)
}
at::Generator Value::generator(const std::string& what) const { TESSERA_VALUE_GET(at::Generator, Kind::Generator) }
const ImageBatch& Value::images(const std::string& what) const { TESSERA_VALUE_GET(ImageBatch, Kind::Image) }
const ValueMap& Value::map(const std::string& what) const {
  if (auto* p = std::get_if<std::shared_ptr<const ValueMap>>(&v_)) return **p;
  mismatch(what, Kind::Map, kind());
}
#undef TESSERA_VALUE_GET

double Value::to_float(const std::string& what) const {
  if (auto* p = std::get_if<double>(&v_)) return *p;
  if (auto* p = std::get_if<int64_t>(&v_)) return static_cast<double>(*p);
  mismatch(what, Kind::Float, kind());
}

namespace {
std::string tensor_repr(const at::Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor" << t.sizes() << ' ' << c10::toString(t.scalar_type());
  return os.str();
}
template <typename T>
std::string list_repr(const std::vector<T>& v) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) os << ", ";
    if (i == 8 && v.size() > 10) {
      os << "… (" << v.size() << " items)";
      break;
    }
    if constexpr (std::is_same_v<T, std::string>)
      os << '"' << v[i] << '"';
    else if constexpr (std::is_same_v<T, at::Tensor>)
      os << tensor_repr(v[i]);
    else
      os << v[i];
  }
  os << ']';
  return os.str();
}
}  // namespace

std::string Value::repr() const {
  switch (kind()) {
    case Kind::None: return "none";
    case Kind::Tensor: return tensor_repr(std::get<at::Tensor>(v_));
    case Kind::Int: return std::to_string(std::get<int64_t>(v_));
    case Kind::Float: {
      std::ostringstream os;
      os << std::get<double>(v_);
      return os.str();
    }
    case Kind::Bool: return std::get<bool>(v_) ? "true" : "false";
    case Kind::String: return '"' + std::get<std::string>(v_) + '"';
    case Kind::IntList: return list_repr(std::get<std::vector<int64_t>>(v_));
    case Kind::FloatList: return list_repr(std::get<std::vector<double>>(v_));
    case Kind::StringList: return list_repr(std::get<std::vector<std::string>>(v_));
    case Kind::TensorList: return list_repr(std::get<std::vector<at::Tensor>>(v_));
    case Kind::Generator: return "generator";
    case Kind::Image: return "images" + tensor_repr(std::get<ImageBatch>(v_).pixels).substr(6);
    case Kind::Map: {
      std::ostringstream os;
      os << '{';
      bool first = true;
      for (const auto& [k, v] : map()) {
        if (!first) os << ", ";
        first = false;
        os << k << ": " << v.repr();
      }
      os << '}';
      return os.str();
    }
    case Kind::Any: break;
  }
  return "?";
}

Value Value::coerced(Kind wanted, const std::string& what) const {
  Kind k = kind();
  if (wanted == Kind::Any || wanted == k) return *this;
  if (wanted == Kind::Float && k == Kind::Int) return Value(to_float(what));
  if (wanted == Kind::FloatList && k == Kind::IntList) {
    std::vector<double> out;
    for (auto v : int_list(what)) out.push_back(static_cast<double>(v));
    return Value(std::move(out));
  }
  // A single string where a list of strings is wanted (prompt: "a cat" vs ["a cat", "a dog"]).
  if (wanted == Kind::StringList && k == Kind::String) return Value(std::vector<std::string>{str(what)});
  mismatch(what, wanted, k);
}

namespace {
std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool parse_int(const std::string& text, int64_t& out) {
  std::string t = trim(text);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno != 0 || end != t.c_str() + t.size()) return false;
  out = v;
  return true;
}

bool parse_float(const std::string& text, double& out) {
  std::string t = trim(text);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (errno != 0 || end != t.c_str() + t.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

bool parse_bool(const std::string& text, bool& out) {
  std::string t = trim(text);
  for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "true" || t == "yes" || t == "on" || t == "1") return out = true, true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return out = false, true;
  return false;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  if (trim(text).empty()) return out;
  std::string cur;
  for (char c : text) {
    if (c == ',') {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

[[noreturn]] void bad_text(const std::string& what, Kind kind, const std::string& text, const std::string& extra = {}) {
  throw InputError("'" + what + "' expects " + kind_name(kind) + " but got '" + text + "'" + extra);
}
}  // namespace

Value parse_value(Kind kind, const std::string& text, const std::string& what) {
  switch (kind) {
    case Kind::Int: {
      int64_t v;
      if (!parse_int(text, v)) bad_text(what, kind, text, " (write a whole number, e.g. 42)");
      return Value(v);
    }
    case Kind::Float: {
      double v;
      if (!parse_float(text, v)) bad_text(what, kind, text, " (write a finite number, e.g. 7.5)");
      return Value(v);
    }
    case Kind::Bool: {
      bool v;
      if (!parse_bool(text, v)) bad_text(what, kind, text, " (write true or false)");
      return Value(v);
    }
    case Kind::String: return Value(text);
    case Kind::StringList: return Value(std::vector<std::string>{text});  // one prompt; commas are text
    case Kind::IntList: {
      std::vector<int64_t> out;
      for (const auto& part : split_commas(text)) {
        int64_t v;
        if (!parse_int(part, v)) bad_text(what, kind, text, " (write comma-separated whole numbers, e.g. 0,0)");
        out.push_back(v);
      }
      return Value(std::move(out));
    }
    case Kind::FloatList: {
      std::vector<double> out;
      for (const auto& part : split_commas(text)) {
        double v;
        if (!parse_float(part, v)) bad_text(what, kind, text, " (write comma-separated numbers)");
        out.push_back(v);
      }
      return Value(std::move(out));
    }
    case Kind::Any: {
      int64_t i;
      double f;
      bool b;
      if (parse_int(text, i)) return Value(i);
      if (parse_float(text, f)) return Value(f);
      if (parse_bool(text, b)) return Value(b);
      return Value(text);
    }
    default:
      throw InputError("'" + what + "' has kind " + kind_name(kind) + ", which cannot be given as text on the command line",
                       {}, {}, "pass it from a block or a checkpoint instead");
  }
}

Kind infer_yaml_kind(const YAML::Node& node) {
  if (!node || node.IsNull()) return Kind::None;
  if (node.IsMap()) return Kind::Map;
  if (node.IsSequence()) {
    Kind elem = Kind::None;
    for (const auto& item : node) {
      Kind k = infer_yaml_kind(item);
      if (elem == Kind::None) elem = k;
      else if (elem == Kind::Int && k == Kind::Float) elem = Kind::Float;
      else if (elem == Kind::Float && k == Kind::Int) continue;
      else if (elem != k) return Kind::Any;  // mixed: not representable
    }
    switch (elem) {
      case Kind::Int: return Kind::IntList;
      case Kind::Float: return Kind::FloatList;
      case Kind::String: return Kind::StringList;
      case Kind::None: return Kind::StringList;  // empty list
      default: return Kind::Any;
    }
  }
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return Kind::String;  // quoted scalar: always a string
  int64_t i;
  double f;
  bool b;
  if (parse_int(s, i)) return Kind::Int;
  if (parse_float(s, f)) return Kind::Float;
  if (parse_bool(s, b) && s != "0" && s != "1") return Kind::Bool;
  return Kind::String;
}

Value value_from_yaml(const YAML::Node& node, Kind kind, const std::string& what) {
  if (!node || node.IsNull()) return Value();
  if (kind == Kind::Any) kind = infer_yaml_kind(node);
  if (kind == Kind::Any) throw InputError("'" + what + "' is a list of mixed kinds; use one kind per list");
  if (kind == Kind::Map) {
    if (!node.IsMap()) throw InputError("'" + what + "' should be a map (key: value)");
    ValueMap m;
    for (const auto& kv : node) {
      std::string key = kv.first.Scalar();
      m[key] = value_from_yaml(kv.second, Kind::Any, what + "." + key);
    }
    return Value(std::move(m));
  }
  if (node.IsMap()) throw InputError("'" + what + "' should be " + std::string(kind_name(kind)) + " but is a map");
  if (node.IsSequence()) {
    if (kind != Kind::IntList && kind != Kind::FloatList && kind != Kind::StringList)
      throw InputError("'" + what + "' should be " + std::string(kind_name(kind)) + " but is a list");
    Kind elem = kind == Kind::IntList ? Kind::Int : kind == Kind::FloatList ? Kind::Float : Kind::String;
    std::vector<int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strings;
    size_t idx = 0;
    for (const auto& item : node) {
      std::string iw = what + "[" + std::to_string(idx++) + "]";
      if (!item.IsScalar()) throw InputError("'" + iw + "' should be " + kind_name(elem));
      Value v = parse_value(elem, item.Scalar(), iw);
      if (elem == Kind::Int) ints.push_back(v.to_int());
      else if (elem == Kind::Float) floats.push_back(v.to_float());
      else strings.push_back(v.str());
    }
    if (elem == Kind::Int) return Value(std::move(ints));
    if (elem == Kind::Float) return Value(std::move(floats));
    return Value(std::move(strings));
  }
  return parse_value(kind, node.Scalar(), what);
}

}  // namespace tessera
