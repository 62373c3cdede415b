#pragma once
/// Typed errors with context. Every error class has its own process exit code
/// (see exit_code_table()), so scripts can tell a bad recipe from a bad plugin.
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera {

/// Exit codes, one per error class. 0 = success. Listed in `tessera --help`.
enum class ExitCode : int {
  Ok = 0,
  Internal = 1,      ///< a bug in Tessera: please report
  Usage = 2,         ///< bad command line
  Recipe = 3,        ///< recipe file cannot be read or parsed (YAML, version, unknown keys, extends)
  Validation = 4,    ///< recipe parsed but the pipeline is inconsistent (unknown ids, unsatisfied inputs…)
  Input = 5,         ///< a pipeline input has the wrong kind or value (--set, missing required input)
  Plugin = 6,        ///< plugin cannot be loaded or registered
  ModelLoad = 7,     ///< model/component files missing or malformed
  Checkpoint = 8,    ///< checkpoint file missing, malformed or inconsistent
  Execution = 9,     ///< a block failed while running
  Cancelled = 10,    ///< the run was cancelled (a callback, Ctrl-C)
  Output = 11,       ///< output file could not be written
  Spec = 12,         ///< a block broke its own spec (undeclared read, missing output)
};

struct ExitCodeInfo {
  ExitCode code;
  const char* name;
  const char* meaning;
};
/// All exit codes with a one-line meaning each, for --help and docs.
const std::vector<ExitCodeInfo>& exit_code_table();

/// A place in a source file (recipe YAML, config JSON…). line/column are 1-based; 0 = unknown.
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;
  bool known() const { return !file.empty(); }
  std::string str() const;  ///< "file:line:col", "file:line" or "file"
};

/// Base of all Tessera errors: what went wrong, where (file:line), in which block, and how to fix it.
class Error : public std::runtime_error {
 public:
  Error(ExitCode code, std::string kind, std::string message, SourceLoc where = {},
        std::string block_path = {}, std::string hint = {});
  ExitCode code() const { return code_; }
  const std::string& kind() const { return kind_; }          ///< "RecipeError", …
  const std::string& message() const { return message_; }    ///< without location/hint
  const SourceLoc& where() const { return where_; }
  const std::string& block_path() const { return block_path_; }
  const std::string& hint() const { return hint_; }

 private:
  static std::string format(const std::string& kind, const std::string& message, const SourceLoc& where,
                            const std::string& block_path, const std::string& hint);
  ExitCode code_;
  std::string kind_, message_;
  SourceLoc where_;
  std::string block_path_, hint_;
};

#define TESSERA_DEFINE_ERROR(Name, Code)                                                       \
  class Name : public Error {                                                                 \
   public:                                                                                    \
    explicit Name(std::string message, SourceLoc where = {}, std::string block_path = {},     \
                  std::string hint = {})                                                      \
        : Error(ExitCode::Code, #Name, std::move(message), std::move(where),                  \
                std::move(block_path), std::move(hint)) {}                                    \
  };

TESSERA_DEFINE_ERROR(UsageError, Usage)
TESSERA_DEFINE_ERROR(RecipeError, Recipe)
TESSERA_DEFINE_ERROR(ValidationError, Validation)
TESSERA_DEFINE_ERROR(InputError, Input)
TESSERA_DEFINE_ERROR(PluginError, Plugin)
TESSERA_DEFINE_ERROR(ModelLoadError, ModelLoad)
TESSERA_DEFINE_ERROR(CheckpointError, Checkpoint)
TESSERA_DEFINE_ERROR(ExecutionError, Execution)
TESSERA_DEFINE_ERROR(CancelledError, Cancelled)
TESSERA_DEFINE_ERROR(OutputError, Output)
TESSERA_DEFINE_ERROR(SpecError, Spec)
#undef TESSERA_DEFINE_ERROR

/// Several validation problems at once (validation reports all it finds, not only the first).
class ValidationErrors : public ValidationError {
 public:
  explicit ValidationErrors(std::vector<ValidationError> errors);
  const std::vector<ValidationError>& errors() const { return errors_; }

 private:
  static std::string join(const std::vector<ValidationError>& errors);
  std::vector<ValidationError> errors_;
};

/// "did you mean 'x'?" suggestion from candidates by edit distance; empty when nothing is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
/// Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace tessera
