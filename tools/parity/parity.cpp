#include "tools/parity/parity.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>

#include <spdlog/spdlog.h>

#include "tessera/error.h"
#include "engine/safetensors.h"
#include "schedulers/scheduler.h"

namespace tessera {

ParityResult run_scheduler_case(const ParityCase& c);  // tools/parity/scheduler_cases.cpp

namespace {

std::mutex& runners_mutex() {
  static std::mutex mu;
  return mu;
}

std::map<std::string, ParityCaseRunner>& runners() {
  static std::map<std::string, ParityCaseRunner> r = {{"scheduler", run_scheduler_case}};
  return r;
}

std::string fmt(double v) {
  std::ostringstream os;
  os << std::setprecision(3) << std::scientific << v;
  return os.str();
}

std::string fmt_cos(double v) {
  std::ostringstream os;
  os << std::setprecision(6) << std::fixed << v;
  return os.str();
}

}  // namespace

// ---- ParityComparison ----

ParityComparison::ParityComparison(const nlohmann::json& tolerance) {
  if (tolerance.is_object()) {
    exact_ = tolerance.value("exact", false);
    atol_ = tolerance.value("atol", 0.0);
    rtol_ = tolerance.value("rtol", 0.0);
  }
}

void ParityComparison::fail(const std::string& reason) {
  if (failure_.empty()) failure_ = reason;
  details_.push_back("  error: " + reason);
}

bool ParityComparison::compare(const std::string& name, const at::Tensor& got_in, const at::Tensor& expected_in) {
  if (!got_in.defined()) {
    fail(name + ": nothing was produced");
    return false;
  }
  if (got_in.sizes() != expected_in.sizes()) {
    fail(name + ": shape " + c10::str(got_in.sizes()) + ", expected " + c10::str(expected_in.sizes()));
    return false;
  }
  const bool got_float = at::isFloatingType(got_in.scalar_type());
  const bool exp_float = at::isFloatingType(expected_in.scalar_type());
  if (got_float != exp_float) {
    fail(name + ": dtype " + std::string(c10::toString(got_in.scalar_type())) + ", expected " +
         c10::toString(expected_in.scalar_type()));
    return false;
  }
  at::Tensor got = got_in.detach().to(at::kCPU, at::kDouble).flatten();
  at::Tensor exp = expected_in.detach().to(at::kCPU, at::kDouble).flatten();
  ++compared_;
  double max_diff = 0.0, cos = 1.0;
  bool ok = true;
  if (got.numel() > 0) {
    at::Tensor diff = (got - exp).abs();
    // Equal values (including equal infinities) match even where the difference is NaN.
    at::Tensor same = got == exp;
    at::Tensor tol = (exact_ || !exp_float) ? at::zeros_like(exp) : atol_ + rtol_ * exp.abs();
    at::Tensor good = same | (diff <= tol);
    ok = good.all().item<bool>();
    at::Tensor finite_diff = at::where(same, at::zeros_like(diff), diff);
    max_diff = finite_diff.max().item<double>();
    if (std::isnan(max_diff) || at::isnan(finite_diff).any().item<bool>()) max_diff = NAN;
    const double ng = got.norm().item<double>(), ne = exp.norm().item<double>();
    if (ng > 0 && ne > 0) cos = (got * exp).sum().item<double>() / (ng * ne);
    else cos = (ng == 0 && ne == 0) ? 1.0 : 0.0;
  }
  if (!std::isnan(max_abs_diff_) && (std::isnan(max_diff) || max_diff > max_abs_diff_)) max_abs_diff_ = max_diff;
  if (!(cos >= min_cos_)) min_cos_ = cos;
  details_.push_back("  " + name + " " + c10::str(got_in.sizes()) + " max_abs_diff=" + fmt(max_diff) +
                     " cos=" + fmt_cos(cos) + (ok ? "" : "  MISMATCH"));
  if (!ok) {
    std::ostringstream os;
    os << name << ": max_abs_diff=" << fmt(max_diff) << " exceeds ";
    if (exact_ || !exp_float) os << "exact match";
    else os << "atol=" << atol_ << " + rtol=" << rtol_ << "*|exp|";
    if (failure_.empty()) failure_ = os.str();
  }
  return ok;
}

bool ParityComparison::compare_scalar(const std::string& name, double got, double expected) {
  return compare(name, at::scalar_tensor(got, at::kDouble), at::scalar_tensor(expected, at::kDouble));
}

ParityResult ParityComparison::result() const {
  ParityResult r;
  r.status = failure_.empty() ? ParityResult::Status::Pass : ParityResult::Status::Fail;
  if (compared_ == 0 && failure_.empty()) {
    r.status = ParityResult::Status::Fail;
    r.reason = "nothing was compared";
  } else {
    r.reason = failure_;
  }
  r.max_abs_diff = max_abs_diff_;
  r.cos = min_cos_;
  r.details = details_;
  return r;
}

// ---- runners ----

void register_case_runner(const std::string& kind, ParityCaseRunner runner) {
  std::lock_guard<std::mutex> lock(runners_mutex());
  runners()[kind] = std::move(runner);
}

std::optional<at::Tensor> parity_tensor(const ParityCase& c, const std::string& name) {
  SafetensorsFile f(c.file);
  if (!f.has(name)) return std::nullopt;
  return f.tensor(name).clone();  // detach from the mapping: runners may write into it
}

at::Tensor required_parity_tensor(const ParityCase& c, const std::string& name) {
  auto t = parity_tensor(c, name);
  if (!t) throw ValidationError("case file " + c.file + " lacks tensor '" + name + "'");
  return *t;
}

std::string parity_model_folder(const ParityCase& c) {
  if (!c.params.contains("model") || !c.params["model"].is_string())
    throw ValidationError("params.model is missing or not a string");
  return (std::filesystem::path(c.models_dir) / c.params["model"].get<std::string>()).string();
}

int run_parity(const ParityOptions& options, std::ostream& out) {
  namespace fs = std::filesystem;
  nlohmann::json manifest;
  try {
    std::ifstream in(options.manifest);
    if (!in) throw InputError("cannot read parity manifest '" + options.manifest + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    manifest = parse_json_lenient(ss.str(), options.manifest);
    if (!manifest.is_object() || !manifest.contains("cases") || !manifest["cases"].is_array())
      throw InputError("parity manifest '" + options.manifest + "' has no 'cases' list");
  } catch (const std::exception& e) {
    out << "error: " << e.what() << "\n";
    return 2;
  }
  std::regex filter;
  try {
    filter = std::regex(options.filter_regex.empty() ? std::string(".*") : options.filter_regex);
  } catch (const std::regex_error& e) {
    out << "error: bad --filter regex '" << options.filter_regex << "': " << e.what() << "\n";
    return 2;
  }
  const fs::path base = fs::absolute(fs::path(options.manifest)).parent_path();
  std::string models_dir = options.models_dir;
  if (models_dir.empty()) {
    const auto& md = manifest.value("models_dir", nlohmann::json("models"));
    models_dir = (base / (md.is_string() ? md.get<std::string>() : std::string("models"))).string();
  }

  // Golden configs carry fields of other classes, which schedulers log as ignored; only verbose runs show that.
  const auto log_level = spdlog::get_level();
  if (!options.verbose) spdlog::set_level(spdlog::level::err);
  int passed = 0, failed = 0, skipped = 0;
  for (const auto& entry : manifest["cases"]) {
    ParityCase c;
    c.name = entry.value("name", std::string("<unnamed>"));
    if (!std::regex_search(c.name, filter)) continue;
    ParityResult r;
    try {
      c.kind = entry.value("kind", std::string());
      c.api = entry.value("api", std::string());
      c.notes = entry.value("notes", std::string());
      c.params = entry.value("params", nlohmann::json::object());
      c.inputs = entry.value("inputs", nlohmann::json::object());
      c.expected = entry.value("expected", nlohmann::json::object());
      c.tolerance = entry.value("tolerance", nlohmann::json::object());
      c.models_dir = models_dir;
      const std::string file = entry.value("file", std::string());
      c.file = file.empty() ? std::string() : (fs::path(file).is_absolute() ? fs::path(file) : base / file).string();
      ParityCaseRunner runner;
      {
        std::lock_guard<std::mutex> lock(runners_mutex());
        auto it = runners().find(c.kind);
        if (it != runners().end()) runner = it->second;
      }
      if (!runner) {
        r.status = ParityResult::Status::Skip;
        r.reason = "no runner for kind '" + c.kind + "' yet";
      } else if (c.file.empty() || !fs::exists(c.file)) {
        r.status = ParityResult::Status::Fail;
        r.reason = "case file '" + c.file + "' is missing";
      } else {
        r = runner(c);
      }
    } catch (const std::exception& e) {
      r = ParityResult{};
      r.status = ParityResult::Status::Fail;
      r.reason = e.what();
    }
    // One line per case: multi-line messages (error hints) are joined.
    for (size_t pos; (pos = r.reason.find('\n')) != std::string::npos;) r.reason.replace(pos, 1, "; ");
    switch (r.status) {
      case ParityResult::Status::Pass:
        ++passed;
        out << "PASS " << c.name << " max_abs_diff=" << fmt(r.max_abs_diff) << " cos=" << fmt_cos(r.cos) << "\n";
        break;
      case ParityResult::Status::Fail:
        ++failed;
        out << "FAIL " << c.name << " max_abs_diff=" << fmt(r.max_abs_diff) << " cos=" << fmt_cos(r.cos) << " : "
            << r.reason << "\n";
        break;
      case ParityResult::Status::Skip:
        ++skipped;
        out << "SKIP " << c.name << " : " << r.reason << "\n";
        break;
    }
    if (options.verbose)
      for (const auto& d : r.details) out << d << "\n";
  }
  spdlog::set_level(log_level);
  out << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace tessera
