#include "tests/guiders/guider_test_utils.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tessera {

std::string parity_dir() {
  return std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity";
}

nlohmann::json read_parity_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  if (!in) throw std::runtime_error("cannot read " + dir + "/manifest.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::string out;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool replaced = false;
    for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
      const std::string t(token);
      if (text.compare(i, t.size(), t) == 0) {
        out += "null";
        i += t.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return nlohmann::json::parse(out);
}

std::string compare_tensors(const at::Tensor& got_in, const at::Tensor& expected_in, double atol, double rtol) {
  if (got_in.sizes() != expected_in.sizes()) {
    std::ostringstream s;
    s << "shape " << got_in.sizes() << " != expected " << expected_in.sizes();
    return s.str();
  }
  at::Tensor got = got_in.to(at::kDouble), expected = expected_in.to(at::kDouble);
  at::Tensor both_nan = at::isnan(got) & at::isnan(expected);
  at::Tensor diff = (got - expected).abs();
  at::Tensor bad = (diff > atol + rtol * expected.abs()) | (at::isnan(diff) & ~both_nan);
  if (!bad.any().item<bool>()) return {};
  at::Tensor d = at::where(both_nan, at::zeros_like(diff), at::nan_to_num(diff, 1e300));
  int64_t worst = d.flatten().argmax().item<int64_t>();
  double cosine = (at::nan_to_num(got).flatten().dot(at::nan_to_num(expected).flatten()) /
                   (at::nan_to_num(got).norm() * at::nan_to_num(expected).norm() + 1e-30))
                      .item<double>();
  std::ostringstream s;
  s << bad.sum().item<int64_t>() << " of " << got.numel() << " elements off; max abs diff " << d.max().item<double>()
    << " at flat index " << worst << " (got " << got.flatten()[worst].item<double>() << ", expected "
    << expected.flatten()[worst].item<double>() << "); cosine " << cosine;
  return s.str();
}

}  // namespace tessera
