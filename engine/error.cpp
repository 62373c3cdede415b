#include "tessera/error.h"

#include <algorithm>
#include <sstream>

namespace tessera {

const std::vector<ExitCodeInfo>& exit_code_table() {
  static const std::vector<ExitCodeInfo> table = {
      {ExitCode::Ok, "ok", "success"},
      {ExitCode::Internal, "internal", "unexpected internal error (a bug: please report it)"},
      {ExitCode::Usage, "usage", "bad command line (unknown option, missing argument)"},
      {ExitCode::Recipe, "recipe", "recipe cannot be read or parsed (YAML syntax, version, unknown keys, extends)"},
      {ExitCode::Validation, "validation", "pipeline is inconsistent (unknown ids, unsatisfied inputs, kind conflicts)"},
      {ExitCode::Input, "input", "an input value has the wrong kind or is out of range (--set, missing input)"},
      {ExitCode::Plugin, "plugin", "a plugin cannot be loaded (missing file or symbol, ABI mismatch, duplicate id)"},
      {ExitCode::ModelLoad, "model-load", "a model or component cannot be loaded (missing/malformed files or tensors)"},
      {ExitCode::Checkpoint, "checkpoint", "a checkpoint file is missing, malformed or does not fit the pipeline"},
      {ExitCode::Execution, "execution", "a block failed while running"},
      {ExitCode::Cancelled, "cancelled", "the run was cancelled by a callback or signal"},
      {ExitCode::Output, "output", "the output file could not be written"},
      {ExitCode::Spec, "spec", "a block broke its declared spec (undeclared read, missing output)"},
  };
  return table;
}

std::string SourceLoc::str() const {
  if (file.empty()) return {};
  std::ostringstream os;
  os << file;
  if (line > 0) {
    os << ':' << line;
    if (column > 0) os << ':' << column;
  }
  return os.str();
}

Error::Error(ExitCode code, std::string kind, std::string message, SourceLoc where, std::string block_path,
             std::string hint)
    : std::runtime_error(format(kind, message, where, block_path, hint)),
      code_(code),
      kind_(std::move(kind)),
      message_(std::move(message)),
      where_(std::move(where)),
      block_path_(std::move(block_path)),
      hint_(std::move(hint)) {}

std::string Error::format(const std::string& kind, const std::string& message, const SourceLoc& where,
                          const std::string& block_path, const std::string& hint) {
  std::ostringstream os;
  if (where.known()) os << where.str() << ": ";
  os << kind << ": ";
  if (!block_path.empty()) os << "in block '" << block_path << "': ";
  os << message;
  if (!hint.empty()) os << "\n  hint: " << hint;
  return os.str();
}

ValidationErrors::ValidationErrors(std::vector<ValidationError> errors)
    : ValidationError(join(errors)), errors_(std::move(errors)) {}

std::string ValidationErrors::join(const std::vector<ValidationError>& errors) {
  std::ostringstream os;
  os << errors.size() << " problem" << (errors.size() == 1 ? "" : "s") << " found:";
  for (const auto& e : errors) os << "\n- " << e.what();
  return os.str();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = static_cast<size_t>(-1);
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // Close enough: at most a third of the word's length (at least 2 edits) away.
  size_t limit = std::max<size_t>(2, word.size() / 3);
  if (!best.empty() && best_d <= limit) return "did you mean '" + best + "'?";
  // A truncated name ("common.prepare" for "common.prepare_noise"): suggest the candidates it starts.
  if (word.size() >= 3) {
    std::vector<std::string> starts;
    for (const auto& c : candidates)
      if (c.size() > word.size() && c.compare(0, word.size(), word) == 0) starts.push_back(c);
    if (!starts.empty() && starts.size() <= 3) {
      std::string s = "did you mean ";
      for (size_t i = 0; i < starts.size(); ++i) s += (i ? (i + 1 == starts.size() ? " or '" : ", '") : "'") + starts[i] + "'";
      return s + "?";
    }
  }
  return {};
}

}  // namespace tessera
