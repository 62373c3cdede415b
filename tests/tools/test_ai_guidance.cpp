// The agent guidance in .ai/ stays true: every path, `tessera` subcommand and flag, make target, block id and
// code identifier it names exists (so renaming something without updating the guidance fails here), the
// skills are well-formed, and the Makefile's claude/codex/clean-ai links resolve. The checker itself is
// tested on a deliberately wrong snippet.
#include <catch2/catch.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string run_capture(const std::string& cmd, int* code = nullptr) {
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return {};
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  if (code) *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

/// Whole-word search (identifier boundaries on both sides).
bool contains_word(const std::string& text, const std::string& word) {
  for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
    const bool left = pos == 0 || !is_word_char(text[pos - 1]);
    const size_t end = pos + word.size();
    const bool right = end >= text.size() || !is_word_char(text[end]);
    if (left && right) return true;
  }
  return false;
}

std::vector<std::string> split_words(const std::string& s) {
  // Whitespace-separated, double quotes group (and are removed).
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false, any = false;
  for (char c : s) {
    if (c == '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && std::isspace(static_cast<unsigned char>(c))) {
      if (any) out.push_back(cur);
      cur.clear();
      any = false;
    } else {
      cur += c;
      any = true;
    }
  }
  if (any) out.push_back(cur);
  return out;
}

/// A markdown file split into what the checker reads.
struct Markdown {
  std::vector<std::string> spans;         ///< inline `code` outside fences
  std::vector<std::string> shell_lines;   ///< lines of ```bash / ```sh / ``` fences that are not `file:` blocks
  std::string defined;                    ///< text of fences whose first line is `// file: NAME` / `# file: NAME`
};

Markdown parse_markdown(const std::string& md) {
  Markdown m;
  std::istringstream in(md);
  std::string line, lang;
  bool fence = false, first = false, file_block = false;
  while (std::getline(in, line)) {
    if (line.rfind("```", 0) == 0) {
      fence = !fence;
      lang = fence ? line.substr(3) : std::string();
      first = fence;
      file_block = false;
      continue;
    }
    if (fence) {
      if (first) {
        first = false;
        file_block = line.rfind("// file: ", 0) == 0 || line.rfind("# file: ", 0) == 0;
      }
      if (file_block) m.defined += line + "\n";
      else if (lang == "bash" || lang == "sh" || lang.empty()) m.shell_lines.push_back(line);
      continue;
    }
    for (size_t a = line.find('`'); a != std::string::npos;) {
      const size_t b = line.find('`', a + 1);
      if (b == std::string::npos) break;
      m.spans.push_back(line.substr(a + 1, b - a - 1));
      a = line.find('`', b + 1);
    }
  }
  return m;
}

/// Options of one `tessera … --help` page: name → takes a value.
struct HelpPage {
  std::map<std::string, bool> options;
  std::vector<std::string> subcommands;
  std::vector<std::set<std::string>> choices;  ///< `TEXT:{a,b}` sets of the positionals, in order
};

HelpPage parse_help(const std::string& text) {
  HelpPage h;
  std::istringstream in(text);
  std::string line;
  enum { None, Options, Subcommands, Positionals } section = None;
  static const std::regex option_re(R"((?:^|[ ,])(--?[A-Za-z][A-Za-z0-9-]*))");
  while (std::getline(in, line)) {
    if (line.rfind("Options:", 0) == 0) { section = Options; continue; }
    if (line.rfind("Subcommands:", 0) == 0) { section = Subcommands; continue; }
    if (line.rfind("Positionals:", 0) == 0) { section = Positionals; continue; }
    if (line.rfind("Exit codes:", 0) == 0) { section = None; continue; }
    if (line.rfind("  ", 0) != 0 || line.rfind("      ", 0) == 0) continue;  // entries start at column 2
    const std::string entry = line.substr(2);
    if (section == Subcommands) {
      h.subcommands.push_back(entry.substr(0, entry.find(' ')));
    } else if (section == Options) {
      const std::string names = entry.substr(0, entry.find("  "));  // "-o,--out TEXT=output.png"
      const std::string spec = names.substr(0, names.find(' '));
      const bool takes_value = names.find(' ') != std::string::npos;
      std::stringstream ss(spec);
      std::string name;
      while (std::getline(ss, name, ',')) h.options[name] = takes_value;
    } else if (section == Positionals) {
      const auto open = entry.find(":{"), close = entry.find('}');
      std::set<std::string> set;
      if (open != std::string::npos && close != std::string::npos && close > open) {
        std::stringstream ss(entry.substr(open + 2, close - open - 2));
        std::string v;
        while (std::getline(ss, v, ',')) set.insert(v);
      }
      h.choices.push_back(set);
    }
  }
  return h;
}

/// What the guidance is checked against. Built once from the tree, the build and the CLI.
struct Reality {
  fs::path source, binary;
  std::string corpus;                     ///< text of the tree's sources, scripts, recipes, docs (not .ai/)
  std::set<std::string> targets;          ///< CMake targets and CTest names
  std::set<std::string> make_targets;
  std::set<std::string> ctest_labels;
  std::set<std::string> block_ids;        ///< `tessera blocks list`
  std::set<std::string> block_families;   ///< their prefixes ("sd", "common", …)
  HelpPage global;
  std::map<std::string, HelpPage> sub;

  static Reality load(const fs::path& source, const fs::path& binary, const std::string& cli) {
    Reality r;
    r.source = source;
    r.binary = binary;
    static const std::set<std::string> exts = {".h", ".hpp", ".cpp", ".txt", ".cmake", ".yaml", ".yml", ".md",
                                               ".json", ".sh", ".py", ".in"};
    for (auto it = fs::recursive_directory_iterator(source); it != fs::recursive_directory_iterator(); ++it) {
      const fs::path rel = fs::relative(it->path(), source);
      const std::string top = rel.begin()->string();
      if (it->is_directory() &&
          (top.rfind("build", 0) == 0 || top == ".git" || top == ".ai" || top == "out" || top == "shared" ||
           top.rfind(".", 0) == 0 || rel == "tests/fixtures/parity/models" || rel == "tests/fixtures/parity/cases")) {
        it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      const std::string name = it->path().filename().string();
      if (name == "test_ai_guidance.cpp") continue;  // the checker's own deliberately wrong names
      if (exts.count(it->path().extension().string()) || name == "Makefile") {
        const std::string text = slurp(it->path());
        r.corpus += text + "\n";
        if (name == "CMakeLists.txt" || it->path().extension() == ".cmake") {
          static const std::regex target_re(
              R"((add_executable|add_library|add_custom_target|tessera_test_folder|add_test)\(\s*(NAME\s+)?([A-Za-z0-9_]+))");
          for (std::sregex_iterator m(text.begin(), text.end(), target_re), e; m != e; ++m) {
            r.targets.insert((*m)[3]);
            if ((*m)[1] == "tessera_test_folder") r.targets.insert("test_" + (*m)[3].str());
          }
          static const std::regex label_re(R"(LABELS\s+"([^"]*)\")");
          for (std::sregex_iterator m(text.begin(), text.end(), label_re), e; m != e; ++m) {
            std::stringstream ss((*m)[1].str());
            std::string l;
            while (std::getline(ss, l, ';')) r.ctest_labels.insert(l);
          }
        }
        if (name == "Makefile") {
          static const std::regex make_re(R"((^|\n)([A-Za-z0-9_.-]+):)");
          for (std::sregex_iterator m(text.begin(), text.end(), make_re), e; m != e; ++m) r.make_targets.insert((*m)[2]);
        }
      }
    }
    r.global = parse_help(run_capture(cli + " --help"));
    for (const auto& s : r.global.subcommands) r.sub[s] = parse_help(run_capture(cli + " " + s + " --help"));
    std::istringstream list(run_capture(cli + " blocks list"));
    std::string line;
    while (std::getline(list, line)) {
      const std::string id = line.substr(0, line.find(' '));
      if (id.find('.') == std::string::npos) continue;
      r.block_ids.insert(id);
      r.block_families.insert(id.substr(0, id.find('.')));
    }
    return r;
  }
};

bool has_placeholder(const std::string& s) {
  for (const char* p : {"<", ">", "*", "…", "...", "{", "}", "$", "|", "[", "]", "NAME", "FILE", "ID"})
    if (s.find(p) != std::string::npos) return true;
  return false;
}

class GuidanceChecker {
 public:
  explicit GuidanceChecker(const Reality& r) : r_(r) {}

  /// Problems in one markdown text (`where` names it in the messages).
  std::vector<std::string> check(const std::string& markdown, const std::string& where) const {
    const Markdown m = parse_markdown(markdown);
    std::vector<std::string> problems;
    auto report = [&](const std::string& what) { problems.push_back(where + ": " + what); };
    std::set<std::string> defined_ids;
    static const std::regex literal_id(R"("([a-z][a-z0-9_]*\.[a-z0-9_.]+)\")");
    for (std::sregex_iterator it(m.defined.begin(), m.defined.end(), literal_id), e; it != e; ++it)
      defined_ids.insert((*it)[1]);

    for (const auto& line : m.shell_lines) check_command_line(line, report);
    for (const auto& span : m.spans) {
      if (check_command_line(span, report)) continue;
      if (span.rfind("--", 0) == 0) {  // a flag on its own: `--checkpoint NAME:save|stop|load`
        const std::string flag = span.substr(0, span.find_first_of(" ="));
        bool known = r_.global.options.count(flag) > 0;
        for (const auto& [name, page] : r_.sub) known = known || page.options.count(flag) > 0;
        if (!known && !m.defined.empty() && m.defined.find(flag) != std::string::npos) known = true;
        if (!known && !is_build_flag(flag)) report("flag '" + flag + "' is not an option of any tessera subcommand");
        continue;
      }
      if (span.find(' ') != std::string::npos || span.empty()) continue;
      if (check_path(span, report)) continue;
      if (check_block_id(span, defined_ids, report)) continue;
      check_identifier(span, m.defined, report);
    }
    return problems;
  }

 private:
  using Report = std::function<void(const std::string&)>;

  static bool is_build_flag(const std::string& flag) {
    // Flags of cmake/ctest/make that the guidance quotes on their own.
    static const std::set<std::string> known = {"--build", "--target", "--install", "--prefix", "--output-on-failure"};
    return known.count(flag) > 0;
  }

  /// A `tessera …`, `make …`, `ctest …` or `cmake … --target …` command; false if the text is none of them.
  bool check_command_line(const std::string& text, const Report& report) const {
    std::string line = text.substr(0, text.find(" # "));
    std::vector<std::string> w = split_words(line);
    if (w.empty()) return false;
    size_t i = 0;
    if (w[0] == "$") ++i;
    while (i < w.size() && w[i].find('=') != std::string::npos && w[i][0] != '-') ++i;  // VAR=value prefixes
    if (i >= w.size()) return false;
    const std::string cmd = w[i];
    if (cmd == "make") {
      for (size_t k = i + 1; k < w.size(); ++k)
        if (w[k][0] != '-' && w[k].find('=') == std::string::npos && !has_placeholder(w[k]) && !r_.make_targets.count(w[k]))
          report("'make " + w[k] + "': the Makefile has no target '" + w[k] + "'");
      return true;
    }
    if (cmd == "ctest" || cmd == "cmake") {
      for (size_t k = i + 1; k + 1 < w.size(); ++k) {
        if (cmd == "ctest" && w[k] == "-L" && !r_.ctest_labels.count(w[k + 1]))
          report("'ctest -L " + w[k + 1] + "': no test has the label '" + w[k + 1] + "'");
        if (cmd == "cmake" && w[k] == "--target" && !has_placeholder(w[k + 1]) && !r_.targets.count(w[k + 1]))
          report("'--target " + w[k + 1] + "': no CMake target '" + w[k + 1] + "'");
      }
      return true;
    }
    const bool is_cli = cmd == "tessera" || (cmd.size() > 8 && cmd.compare(cmd.size() - 8, 8, "/tessera") == 0);
    if (!is_cli) return false;
    if (cmd != "tessera") check_path(cmd, report);
    ++i;
    // Global options, then the subcommand.
    for (; i < w.size() && w[i][0] == '-'; ++i) {
      const std::string opt = w[i].substr(0, w[i].find('='));
      auto it = r_.global.options.find(opt);
      if (it == r_.global.options.end()) {
        report("'tessera " + opt + "': no such global option");
        return true;
      }
      if (it->second && w[i].find('=') == std::string::npos) ++i;
    }
    if (i >= w.size() || has_placeholder(w[i])) return true;
    auto sub = r_.sub.find(w[i]);
    if (sub == r_.sub.end()) {
      report("'tessera " + w[i] + "': no such subcommand");
      return true;
    }
    const HelpPage& page = sub->second;
    size_t positional = 0;
    for (++i; i < w.size(); ++i) {
      if (w[i] == "…" || w[i] == "..." || w[i] == "\\") break;
      if (w[i][0] == '-' && w[i].size() > 1) {
        const std::string opt = w[i].substr(0, w[i].find('='));
        auto it = page.options.find(opt);
        bool takes_value = false;
        if (it != page.options.end()) takes_value = it->second;
        else if (r_.global.options.count(opt)) takes_value = r_.global.options.at(opt);
        else {
          report("'tessera " + sub->first + " " + opt + "': no such option");
          continue;
        }
        if (takes_value && w[i].find('=') == std::string::npos) ++i;
        continue;
      }
      if (positional < page.choices.size() && !page.choices[positional].empty() && !has_placeholder(w[i]) &&
          !page.choices[positional].count(w[i]))
        report("'tessera " + sub->first + " " + w[i] + "': '" + w[i] + "' is not one of its choices");
      ++positional;
    }
    return true;
  }

  /// A path into the tree (first component is a top-level entry of the repository, a build folder or
  /// ../shared); false if the text does not look like one.
  bool check_path(std::string p, const Report& report) const {
    if (p.find('/') == std::string::npos || p.find("://") != std::string::npos) return false;
    if (has_placeholder(p)) return true;
    while (!p.empty() && (p.back() == '/' || p.back() == ',' || p.back() == '.')) p.pop_back();
    const std::string top = p.substr(0, p.find('/'));
    if (top == "..") {
      if (p.rfind("../shared/", 0) != 0) return false;
      // The shared folder sits next to the checkout; where it is absent there is nothing to check against.
      if (fs::exists(r_.source.parent_path() / "shared") && !fs::exists(r_.source.parent_path() / p.substr(3)))
        report("path '" + p + "' does not exist");
      return true;
    }
    if (top.rfind("build", 0) == 0) {
      const std::string rest = p.find('/') == std::string::npos ? "" : p.substr(p.find('/') + 1);
      const std::string base = fs::path(p).filename().string();
      if (!fs::exists(r_.binary / rest) && !r_.targets.count(base))
        report("build output '" + p + "' is neither in the build folder nor a CMake target");
      return true;
    }
    if (!fs::exists(r_.source / top)) return false;  // not rooted in the tree: an example output, not a path
    if (!fs::exists(r_.source / p)) report("path '" + p + "' does not exist");
    return true;
  }

  /// A dotted block id of a known family (`sd.prepare_latents`); false if the text is not one.
  bool check_block_id(const std::string& s, const std::set<std::string>& defined, const Report& report) const {
    static const std::regex id_re(R"([a-z][a-z0-9_]*(\.[a-z0-9_]+)+)");
    if (!std::regex_match(s, id_re)) return false;
    const std::string family = s.substr(0, s.find('.'));
    std::set<std::string> families = r_.block_families;
    for (const auto& d : defined) families.insert(d.substr(0, d.find('.')));
    if (!families.count(family)) return true;  // not a block id (a file name, a Python module…)
    if (!r_.block_ids.count(s) && !defined.count(s)) report("block id '" + s + "' is not registered");
    return true;
  }

  /// A C++ identifier (with `::`, template arguments or `()`), CMake target or CTest name.
  void check_identifier(std::string s, const std::string& defined, const Report& report) const {
    static const std::regex ident_re(R"(~?[A-Za-z_][A-Za-z0-9_]*(::~?[A-Za-z_][A-Za-z0-9_]*)*(<[A-Za-z0-9_, :]*>)?(\(\))?)");
    if (!std::regex_match(s, ident_re)) return;
    if (auto lt = s.find('<'); lt != std::string::npos) s = s.substr(0, lt);
    if (auto par = s.find('('); par != std::string::npos) s = s.substr(0, par);
    // Plain lower-case words (`seed`, `auto`) are prose, not identifiers.
    const bool qualifies = s.find('_') != std::string::npos || s.find("::") != std::string::npos ||
                           std::any_of(s.begin() + 1, s.end(), [](char c) { return std::isupper(c); });
    if (!qualifies) return;
    if (r_.targets.count(s)) return;
    size_t start = 0;
    while (start <= s.size()) {
      const size_t end = s.find("::", start);
      std::string part = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!part.empty() && part[0] == '~') part = part.substr(1);
      if (!contains_word(r_.corpus, part) && !contains_word(defined, part)) {
        report("identifier '" + part + "' (in `" + s + "`) is not found in the tree");
        return;
      }
      if (end == std::string::npos) break;
      start = end + 2;
    }
  }

  const Reality& r_;
};

const Reality& reality() {
  static const Reality r = Reality::load(TESSERA_SOURCE_DIR, TESSERA_BINARY_DIR, TESSERA_CLI);
  return r;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

}  // namespace

TEST_CASE("the guidance checker catches names that do not exist", "[cli][ai]") {
  GuidanceChecker checker(reality());
  const std::string wrong =
      "Read `engine/no_such_file.h` and `tessera frobnicate recipes/sd/auto.yaml`.\n"
      "Run `tessera run recipes/sd/auto.yaml --no-such-flag 3` or `tessera blocks shw sd.prepare_latents`.\n"
      "Call `no_such_function_xyz()`, use `sd.no_such_block`, then:\n"
      "```bash\n"
      "make no_such_target\n"
      "tessera --no-such-global validate recipes/sd/auto.yaml\n"
      "ctest -L no_such_label\n"
      "```\n";
  const auto problems = checker.check(wrong, "snippet");
  INFO(joined(problems));
  CHECK(problems.size() == 9);
  for (const char* name : {"engine/no_such_file.h", "frobnicate", "--no-such-flag", "shw", "no_such_function_xyz",
                           "sd.no_such_block", "no_such_target", "--no-such-global"})
    CHECK_THAT(joined(problems), Catch::Matchers::Contains(name));
  CHECK_THAT(joined(problems), Catch::Matchers::Contains("no_such_label"));

  const std::string right =
      "Read `include/tessera/registry.h`, run `tessera -q run recipes/sd/auto.yaml --set seed=1 --checkpoint "
      "text_encoder:save --out x.png`, `tessera blocks show sd.prepare_latents`, `tessera parity --manifest "
      "tests/fixtures/parity/manifest.json --filter \"^sched_\"`; call `register_builtin_blocks`, "
      "`InputParam::from_template`, `add_block_class<T>`; use `sd.prepare_latents`; `make test`; `--checkpoint`; "
      "`test_blocks`; an example output `fox.png` and a Python module `safetensors.torch`.\n";
  const auto none = checker.check(right, "snippet");
  INFO(joined(none));
  CHECK(none.empty());
}

TEST_CASE("every path, command, flag, block id and identifier in .ai/ exists", "[cli][ai]") {
  GuidanceChecker checker(reality());
  const fs::path ai = fs::path(TESSERA_SOURCE_DIR) / ".ai";
  REQUIRE(fs::exists(ai / "AGENTS.md"));
  // The checker would silently pass on an empty reality.
  REQUIRE(reality().sub.count("run"));
  REQUIRE(reality().sub.at("run").options.count("--checkpoint"));
  REQUIRE(reality().block_ids.count("sd.prepare_latents"));
  int files = 0;
  std::vector<std::string> problems;
  for (const auto& entry : fs::recursive_directory_iterator(ai)) {
    if (entry.path().extension() != ".md") continue;
    ++files;
    auto p = checker.check(slurp(entry.path()), fs::relative(entry.path(), TESSERA_SOURCE_DIR).string());
    problems.insert(problems.end(), p.begin(), p.end());
  }
  CHECK(files >= 4);
  INFO(joined(problems));
  CHECK(problems.empty());
}

TEST_CASE("skills have a name matching their folder and a description; AGENTS.md routes to each", "[cli][ai]") {
  const fs::path ai = fs::path(TESSERA_SOURCE_DIR) / ".ai";
  const std::string agents = slurp(ai / "AGENTS.md");
  int skills = 0;
  for (const auto& dir : fs::directory_iterator(ai / "skills")) {
    if (!dir.is_directory()) continue;
    ++skills;
    const std::string name = dir.path().filename().string();
    INFO("skill " << name);
    const std::string text = slurp(dir.path() / "SKILL.md");
    REQUIRE(text.rfind("---\n", 0) == 0);
    const std::string front = text.substr(4, text.find("\n---", 4) - 4);
    CHECK_THAT(front, Catch::Matchers::Contains("name: " + name + "\n"));
    CHECK_THAT(front, Catch::Matchers::Contains("description:"));
    CHECK_THAT(agents, Catch::Matchers::Contains(".ai/skills/" + name + "/SKILL.md"));
  }
  CHECK(skills >= 3);
}

TEST_CASE("make claude / codex link the guidance; make clean-ai removes the links", "[cli][ai]") {
  int code = 0;
  run_capture("make --version", &code);
  if (code != 0) {
    WARN("make is not installed; skipped");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("tessera-ai-make-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fs::path(TESSERA_SOURCE_DIR) / "Makefile", dir / "Makefile");
  fs::copy(fs::path(TESSERA_SOURCE_DIR) / ".ai", dir / ".ai", fs::copy_options::recursive);
  const std::string make = "make -s -C " + dir.string() + " ";
  std::string out = run_capture(make + "claude codex", &code);
  INFO(out);
  REQUIRE(code == 0);
  for (const char* link : {"CLAUDE.md", "AGENTS.md", ".claude/skills", ".agents/skills"}) {
    INFO(link);
    CHECK(fs::is_symlink(dir / link));
  }
  CHECK(slurp(dir / "CLAUDE.md") == slurp(dir / ".ai/AGENTS.md"));
  CHECK(slurp(dir / "AGENTS.md") == slurp(dir / ".ai/AGENTS.md"));
  CHECK(fs::exists(dir / ".claude/skills/parity-testing/SKILL.md"));
  CHECK(fs::exists(dir / ".agents/skills/custom-blocks/SKILL.md"));
  // Running it twice is harmless (no link inside the linked folder).
  REQUIRE(run_capture(make + "claude codex", &code).size() > 0);
  CHECK(code == 0);
  CHECK_FALSE(fs::exists(dir / ".ai/skills/skills"));
  out = run_capture(make + "clean-ai", &code);
  CHECK(code == 0);
  for (const char* link : {"CLAUDE.md", "AGENTS.md", ".claude", ".agents"}) {
    INFO(link);
    CHECK_FALSE(fs::exists(fs::symlink_status(dir / link)));
  }
  CHECK(fs::exists(dir / ".ai/AGENTS.md"));
  CHECK(fs::exists(dir / ".ai/skills/custom-blocks/SKILL.md"));
  fs::remove_all(dir);
}
