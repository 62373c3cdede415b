#include "tools/parity/component_cases.h"

#include <map>
#include <mutex>

namespace tessera {

namespace {
std::mutex& mu() {
  static std::mutex m;
  return m;
}
std::map<std::string, ParityCaseRunner>& by_class() {
  static std::map<std::string, ParityCaseRunner> r;
  return r;
}

std::map<std::string, ParityCaseRunner>& by_prefix() {
  static std::map<std::string, ParityCaseRunner> r;
  return r;
}

ParityResult run_component_case(const ParityCase& c) {
  const std::string cls = component_case_class(c);
  ParityCaseRunner runner;
  {
    std::lock_guard<std::mutex> lock(mu());
    size_t best = 0;  // the longest matching prefix wins
    for (const auto& [prefix, r] : by_prefix())
      if (c.name.rfind(prefix, 0) == 0 && prefix.size() > best) {
        runner = r;
        best = prefix.size();
      }
  }
  if (runner) return runner(c);
  {
    std::lock_guard<std::mutex> lock(mu());
    auto it = by_class().find(cls);
    if (it != by_class().end()) runner = it->second;
  }
  if (!runner) {
    ParityResult r;
    r.status = ParityResult::Status::Skip;
    r.reason = "no runner for component class '" + cls + "' yet";
    return r;
  }
  return runner(c);
}
}  // namespace

std::string component_case_class(const ParityCase& c) {
  // "diffusers.UNet2DConditionModel.forward(sample, …)" → "UNet2DConditionModel"
  const std::string head = c.api.substr(0, c.api.find('('));
  const size_t first = head.find('.');
  if (first == std::string::npos) return {};
  const size_t second = head.find('.', first + 1);
  return head.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
}

void register_component_case_prefix_runner(const std::string& name_prefix, ParityCaseRunner runner) {
  {
    std::lock_guard<std::mutex> lock(mu());
    by_prefix()[name_prefix] = std::move(runner);
  }
  register_case_runner("component", run_component_case);
}

void register_component_case_runner(const std::string& class_name, ParityCaseRunner runner) {
  {
    std::lock_guard<std::mutex> lock(mu());
    by_class()[class_name] = std::move(runner);
  }
  register_case_runner("component", run_component_case);
}

}  // namespace tessera
