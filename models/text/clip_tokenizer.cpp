#include "models/text/clip_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <clocale>
#include <cwctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <tuple>

#include <locale.h>  // newlocale / towlower_l (POSIX)

#include <nlohmann/json.hpp>

#include "tessera/error.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

// transformers keeps at most 49152 - 256 - 2 merges (the OpenAI CLIP vocabulary size minus bytes and specials).
constexpr size_t kMaxMerges = 49152 - 256 - 2;
// BPE results of words up to this many bytes are cached; the cache is cleared when it reaches kCacheEntries.
constexpr size_t kCacheWordBytes = 256;
constexpr size_t kCacheEntries = 1 << 16;

// ---- UTF-8 ----

/// Decodes UTF-8; every byte that does not start a well-formed sequence (overlong, surrogate, > U+10FFFF,
/// truncated) becomes U+FFFD.
std::u32string utf8_decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    }
    size_t len = 0;
    char32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_encode(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) utf8_append(out, cp);
  return out;
}

// ---- PCRE2 ----

/// A compiled PCRE2 pattern (UTF + UCP), shared by all tokenizers; match data is per call.
class Pcre2Pattern {
 public:
  Pcre2Pattern(const char* pattern, uint32_t extra_options) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | extra_options, &err, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw std::logic_error(std::string("CLIPTokenizer: PCRE2 pattern does not compile: ") +
                             reinterpret_cast<const char*>(msg));
    }
  }
  ~Pcre2Pattern() { pcre2_code_free(code_); }
  Pcre2Pattern(const Pcre2Pattern&) = delete;
  Pcre2Pattern& operator=(const Pcre2Pattern&) = delete;

  /// Calls `fn(begin, end)` for every non-overlapping match in `text` (valid UTF-8), left to right.
  void for_each_match(const std::string& text, const std::function<bool(size_t, size_t)>& fn) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    if (!md) throw std::bad_alloc();
    size_t start = 0;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    while (start <= text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        throw InputError("CLIPTokenizer: prompt text could not be matched (PCRE2 error " + std::to_string(rc) + ")");
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (!fn(b, e)) break;
      start = e > b ? e : e + 1;  // the patterns never match empty; guard anyway
    }
    pcre2_match_data_free(md);
  }

  /// Replaces every match with `with`.
  std::string replace_all(const std::string& text, const std::string& with) const {
    std::string out;
    out.reserve(text.size());
    size_t last = 0;
    for_each_match(text, [&](size_t b, size_t e) {
      out.append(text, last, b - last);
      out.append(with);
      last = e;
      return true;
    });
    out.append(text, last, std::string::npos);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

/// transformers' CLIP pre-split (with re.IGNORECASE).
const Pcre2Pattern& clip_split_pattern() {
  static const Pcre2Pattern p(
      R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)", PCRE2_CASELESS);
  return p;
}
/// BasicTokenizer._clean_text, part 1: NUL, U+FFFD and control characters (category C*) other than \t \n \r.
const Pcre2Pattern& dropped_chars_pattern() {
  static const Pcre2Pattern p(R"([\x{0}\x{FFFD}]|(?![\t\n\r])\p{C})", 0);
  return p;
}
/// BasicTokenizer._clean_text, part 2: \t \n \r and space separators become " ".
const Pcre2Pattern& space_chars_pattern() {
  static const Pcre2Pattern p(R"([\t\n\r\p{Zs}])", 0);
  return p;
}

// ---- Unicode helpers ----

/// BasicTokenizer._is_chinese_char: CJK ideograph blocks.
bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/// Python's str.split() separators that can survive _clean_text (Zs is already " ").
bool is_split_space(char32_t cp) { return cp == U' ' || cp == 0x2028 || cp == 0x2029; }

/// The C.UTF-8 locale for towlower_l (simple Unicode case mapping); null when the system has none.
locale_t utf8_ctype() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    if (!l) l = newlocale(LC_CTYPE_MASK, "C.utf8", static_cast<locale_t>(0));
    return l;
  }();
  return loc;
}

char32_t simple_lower(char32_t cp) {
  if (cp < 0x80) return (cp >= U'A' && cp <= U'Z') ? cp + 32 : cp;
  locale_t loc = utf8_ctype();
  if (!loc) return cp;
  return static_cast<char32_t>(towlower_l(static_cast<wint_t>(cp), loc));
}

bool is_alpha(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= U'a' && (cp | 0x20) <= U'z';
  locale_t loc = utf8_ctype();
  return loc && iswalpha_l(static_cast<wint_t>(cp), loc);
}

/// Python's str.lower() on one whitespace-free word: simple mapping, U+0130 -> "i̇", final sigma.
void append_lower(std::u32string& out, const std::u32string& word) {
  for (size_t i = 0; i < word.size(); ++i) {
    const char32_t cp = word[i];
    if (cp == 0x0130) {
      out.push_back(U'i');
      out.push_back(0x0307);
    } else if (cp == 0x03A3) {
      const bool after_letter = i > 0 && is_alpha(word[i - 1]);
      const bool before_letter = i + 1 < word.size() && is_alpha(word[i + 1]);
      out.push_back(after_letter && !before_letter ? 0x03C2 : 0x03C3);
    } else {
      out.push_back(simple_lower(cp));
    }
  }
}

/// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards; UTF-8 strings.
const std::vector<std::string>& byte_encoder() {
  static const std::vector<std::string> table = [] {
    std::vector<char32_t> cps(256, 0);
    std::vector<bool> printable(256, false);
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) cps[b] = printable[b] ? static_cast<char32_t>(b) : next++;
    std::vector<std::string> t(256);
    for (int b = 0; b < 256; ++b) utf8_append(t[b], cps[b]);
    return t;
  }();
  return table;
}

// ---- files ----

std::string read_file(const fs::path& path, bool required) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    if (!required) return {};
    throw ModelLoadError("CLIPTokenizer: file '" + path.string() + "' is missing");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelLoadError("CLIPTokenizer: cannot read '" + path.string() + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const fs::path& path, bool required) {
  const std::string text = read_file(path, required);
  if (text.empty() && !required) return nlohmann::json::object();
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    if (!j.is_object()) throw ModelLoadError("CLIPTokenizer: '" + path.string() + "' is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError("CLIPTokenizer: '" + path.string() + "' is not valid JSON: " + e.what());
  }
}

/// A special token entry: "text", {"content": "text", ...} or null.
std::optional<std::string> token_content(const nlohmann::json& v, const std::string& key, const fs::path& file) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw ModelLoadError("CLIPTokenizer: '" + file.string() + "': " + key + " is neither a string nor {content: …}");
}

bool is_py_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

// ---- loading ----

std::shared_ptr<CLIPTokenizer> CLIPTokenizer::from_pretrained(const std::string& folder) {
  return from_pretrained(folder, folder);
}

std::shared_ptr<CLIPTokenizer> CLIPTokenizer::from_pretrained(const std::string& folder,
                                                              const std::string& vocab_folder) {
  std::shared_ptr<CLIPTokenizer> tok(new CLIPTokenizer());
  tok->folder_ = folder;
  const fs::path dir(folder), vocab_dir(vocab_folder);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw ModelLoadError("CLIPTokenizer: tokenizer folder '" + folder + "' is missing");
  if (vocab_folder != folder && !fs::is_directory(vocab_dir, ec))
    throw ModelLoadError("CLIPTokenizer: vocabulary folder '" + vocab_folder + "' is missing");

  // vocab.json: token -> id
  const fs::path vocab_path = vocab_dir / "vocab.json";
  const nlohmann::json vocab = read_json(vocab_path, true);
  tok->encoder_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      throw ModelLoadError("CLIPTokenizer: '" + vocab_path.string() + "': token '" + it.key() +
                           "' has no non-negative integer id");
    tok->encoder_[it.key()] = it.value().get<int64_t>();
  }
  if (tok->encoder_.empty()) throw ModelLoadError("CLIPTokenizer: '" + vocab_path.string() + "' is empty");

  // merges.txt: "#version: …" then one "first second" pair per line, in rank order.
  const fs::path merges_path = vocab_dir / "merges.txt";
  const std::string merges = read_file(merges_path, true);
  std::istringstream lines(merges);
  std::string line;
  size_t line_no = 0, rank = 0;
  bool first_content_line = true;
  while (std::getline(lines, line)) {
    ++line_no;
    std::istringstream fields(line);
    std::vector<std::string> parts;
    for (std::string f; fields >> f;) parts.push_back(f);
    if (parts.empty()) continue;  // blank lines (transformers strips the file's ends)
    if (first_content_line) {
      first_content_line = false;
      if (line.rfind("#version", 0) != 0)
        throw ModelLoadError("CLIPTokenizer: '" + merges_path.string() +
                             "' does not start with a '#version' line (is it a BPE merges file?)");
      continue;
    }
    if (rank >= kMaxMerges) break;
    if (parts.size() != 2)
      throw ModelLoadError("CLIPTokenizer: '" + merges_path.string() + "' line " + std::to_string(line_no) +
                           " is not a 'first second' merge pair");
    tok->bpe_ranks_.emplace(parts[0] + " " + parts[1], static_cast<int64_t>(rank));
    ++rank;
  }
  if (first_content_line) throw ModelLoadError("CLIPTokenizer: '" + merges_path.string() + "' is empty");

  // Special and added tokens: tokenizer_config.json first, special_tokens_map.json next, then CLIP defaults. As in
  // transformers, a config without added_tokens_decoder (written before transformers 4.34) gives way to the map:
  // SD 2.x's published tokenizer has pad "<|endoftext|>" in the config and "!" in the map, and pads with "!".
  const fs::path config_path = dir / "tokenizer_config.json", map_path = dir / "special_tokens_map.json";
  const nlohmann::json config = read_json(config_path, false);
  const nlohmann::json special_map = read_json(map_path, false);
  const bool map_first = !config.contains("added_tokens_decoder");
  auto special = [&](const std::string& key, const std::string& fallback) -> std::optional<std::string> {
    if (map_first && special_map.contains(key)) return token_content(special_map[key], key, map_path);
    if (config.contains(key)) return token_content(config[key], key, config_path);
    if (special_map.contains(key)) return token_content(special_map[key], key, map_path);
    return fallback;
  };
  std::map<std::string, AddedToken> added;  // content -> token
  if (config.contains("added_tokens_decoder")) {
    const auto& dec = config["added_tokens_decoder"];
    if (!dec.is_object())
      throw ModelLoadError("CLIPTokenizer: '" + config_path.string() + "': added_tokens_decoder is not an object");
    for (auto it = dec.begin(); it != dec.end(); ++it) {
      AddedToken t;
      try {
        t.id = std::stoll(it.key());
      } catch (const std::exception&) {
        throw ModelLoadError("CLIPTokenizer: '" + config_path.string() + "': added token id '" + it.key() +
                             "' is not an integer");
      }
      const auto content = token_content(it.value(), "added_tokens_decoder." + it.key(), config_path);
      if (!content || content->empty())
        throw ModelLoadError("CLIPTokenizer: '" + config_path.string() + "': added token " + it.key() + " is empty");
      t.content = *content;
      if (it.value().is_object()) {
        t.lstrip = it.value().value("lstrip", false);
        t.rstrip = it.value().value("rstrip", false);
      }
      added[t.content] = t;
    }
  }
  auto special_id = [&](const std::string& key, const std::optional<std::string>& content) -> int64_t {
    if (!content) return -1;
    auto a = added.find(*content);
    if (a != added.end()) return a->second.id;
    auto v = tok->encoder_.find(*content);
    if (v == tok->encoder_.end())
      throw ModelLoadError("CLIPTokenizer: " + key + " '" + *content + "' is not in '" + vocab_path.string() + "'");
    AddedToken t;
    t.content = *content;
    t.id = v->second;
    added[t.content] = t;  // special tokens are added tokens in transformers: they are split out of the text
    return t.id;
  };
  const auto unk = special("unk_token", "<|endoftext|>");
  tok->unk_id_ = special_id("unk_token", unk);
  tok->bos_id_ = special_id("bos_token", special("bos_token", "<|startoftext|>"));
  tok->eos_id_ = special_id("eos_token", special("eos_token", "<|endoftext|>"));
  tok->pad_id_ = special_id("pad_token", special("pad_token", "<|endoftext|>"));
  if (tok->bos_id_ < 0 || tok->eos_id_ < 0)
    throw ModelLoadError("CLIPTokenizer: '" + folder + "' has no bos_token or eos_token");
  if (tok->unk_id_ < 0) tok->unk_id_ = tok->eos_id_;
  for (auto& kv : added) tok->added_tokens_.push_back(kv.second);
  std::stable_sort(tok->added_tokens_.begin(), tok->added_tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });

  // model_max_length: transformers stores int(1e30) when unset; CLIP checkpoints all use 77.
  if (config.contains("model_max_length")) {
    const auto& m = config["model_max_length"];
    if (!m.is_number()) throw ModelLoadError("CLIPTokenizer: '" + config_path.string() + "': model_max_length is not a number");
    const double v = m.get<double>();
    if (v < 2) throw ModelLoadError("CLIPTokenizer: '" + config_path.string() + "': model_max_length < 2");
    if (v <= 1e6) tok->model_max_length_ = static_cast<int64_t>(v);
  }
  return tok;
}

size_t CLIPTokenizer::nbytes() const {
  size_t n = 0;
  for (const auto& kv : encoder_) n += kv.first.size() + sizeof(int64_t);
  for (const auto& kv : bpe_ranks_) n += kv.first.size() + sizeof(int64_t);
  return n;
}

std::optional<int64_t> CLIPTokenizer::token_to_id(const std::string& token) const {
  auto it = encoder_.find(token);
  if (it == encoder_.end()) return std::nullopt;
  return it->second;
}

// ---- BPE ----

std::vector<std::string> CLIPTokenizer::bpe(const std::string& word) const {
  const bool cacheable = word.size() <= kCacheWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) return it->second;
  }
  // transformers seeds its cache so that these two words stay whole.
  if (word == "<|startoftext|>" || word == "<|endoftext|>") return {word};

  // Symbols: one per UTF-8 character of the byte-encoded word; the last one carries "</w>".
  std::vector<std::string> sym;
  for (size_t i = 0; i < word.size();) {
    const unsigned char c = static_cast<unsigned char>(word[i]);
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    sym.push_back(word.substr(i, len));
    i += len;
  }
  std::vector<std::string> result;
  if (sym.empty()) return result;
  sym.back() += "</w>";

  // transformers merges, while some adjacent pair has a rank, every occurrence of the lowest-ranked pair left to
  // right. Same result here with a heap of (rank, left index) processed one rank at a time: merging never creates
  // another occurrence of the pair being merged, and pairs it creates wait for the next round.
  const size_t n = sym.size();
  std::vector<int64_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int64_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int64_t>(i + 1) : -1;
  }
  auto rank_of = [&](int64_t a, int64_t b) -> int64_t {
    auto it = bpe_ranks_.find(sym[a] + " " + sym[b]);
    return it == bpe_ranks_.end() ? -1 : it->second;
  };
  using Entry = std::tuple<int64_t, int64_t, int64_t>;  // rank, left, right
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](int64_t a) {
    if (a < 0 || next[a] < 0) return;
    const int64_t r = rank_of(a, next[a]);
    if (r >= 0) heap.emplace(r, a, next[a]);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int64_t>(i));
  size_t count = n;
  std::vector<Entry> round;
  while (!heap.empty() && count > 1) {
    const int64_t r = std::get<0>(heap.top());
    round.clear();
    while (!heap.empty() && std::get<0>(heap.top()) == r) {
      round.push_back(heap.top());
      heap.pop();
    }
    std::vector<int64_t> touched;
    for (const auto& [rank, a, b] : round) {
      if (!alive[a] || !alive[b] || next[a] != b || rank_of(a, b) != rank) continue;  // stale
      sym[a] += sym[b];
      alive[b] = false;
      next[a] = next[b];
      if (next[b] >= 0) prev[next[b]] = a;
      --count;
      touched.push_back(a);
    }
    for (int64_t a : touched) {
      if (!alive[a]) continue;
      if (prev[a] >= 0) push(prev[a]);
      push(a);
    }
  }
  for (int64_t i = 0; i >= 0; i = next[i]) result.push_back(sym[i]);

  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.emplace(word, result);
  }
  return result;
}

// ---- tokenize ----

void CLIPTokenizer::tokenize_piece(const std::string& text, size_t max_tokens, std::vector<std::string>& out) const {
  // BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize: clean, space out CJK, split on
  // whitespace, lowercase; joined with single spaces. (The valid UTF-8 that PCRE2 needs comes from utf8_encode.)
  std::string cleaned = utf8_encode(utf8_decode(text));
  cleaned = dropped_chars_pattern().replace_all(cleaned, "");
  cleaned = space_chars_pattern().replace_all(cleaned, " ");
  const std::u32string cps = utf8_decode(cleaned);
  std::u32string joined, word;
  auto flush = [&] {
    if (word.empty()) return;
    if (!joined.empty()) joined.push_back(U' ');
    append_lower(joined, word);
    word.clear();
  };
  for (char32_t cp : cps) {
    if (is_split_space(cp)) {
      flush();
    } else if (is_cjk(cp)) {
      flush();
      word.push_back(cp);
      flush();
    } else {
      word.push_back(cp);
    }
  }
  flush();
  const std::string normalized = utf8_encode(joined);

  const auto& enc = byte_encoder();
  clip_split_pattern().for_each_match(normalized, [&](size_t b, size_t e) {
    std::string encoded;
    for (size_t i = b; i < e; ++i) encoded += enc[static_cast<unsigned char>(normalized[i])];
    for (auto& t : bpe(encoded)) {
      if (out.size() >= max_tokens) return false;
      out.push_back(std::move(t));
    }
    return out.size() < max_tokens;
  });
}

std::vector<std::string> CLIPTokenizer::tokenize(const std::string& text, size_t max_tokens) const {
  // Split out added tokens (earliest, then longest match; case-sensitive), as PreTrainedTokenizer.tokenize does.
  struct Segment {
    std::string text;
    const AddedToken* added = nullptr;
  };
  std::vector<Segment> segments;
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    for (const auto& t : added_tokens_) {
      if (text.compare(i, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > last) segments.push_back({text.substr(last, i - last), nullptr});
    segments.push_back({hit->content, hit});
    i += hit->content.size();
    last = i;
  }
  if (last < text.size()) segments.push_back({text.substr(last), nullptr});
  // lstrip / rstrip added tokens eat the whitespace next to them.
  for (size_t k = 0; k < segments.size(); ++k) {
    const AddedToken* t = segments[k].added;
    if (!t) continue;
    if (t->rstrip && k + 1 < segments.size() && !segments[k + 1].added) {
      std::string& s = segments[k + 1].text;
      size_t p = 0;
      while (p < s.size() && is_py_space(s[p])) ++p;
      s.erase(0, p);
    }
    if (t->lstrip && k > 0 && !segments[k - 1].added) {
      std::string& s = segments[k - 1].text;
      while (!s.empty() && is_py_space(s.back())) s.pop_back();
    }
  }
  std::vector<std::string> out;
  for (const auto& seg : segments) {
    if (out.size() >= max_tokens) break;
    if (seg.added) out.push_back(seg.text);
    else if (!seg.text.empty()) tokenize_piece(seg.text, max_tokens, out);
  }
  return out;
}

std::vector<int64_t> CLIPTokenizer::encode(const std::string& text, size_t max_tokens) const {
  std::vector<int64_t> ids;
  for (const auto& t : tokenize(text, max_tokens)) {
    int64_t id = -1;
    for (const auto& a : added_tokens_) {
      if (a.content == t) {
        id = a.id;
        break;
      }
    }
    if (id < 0) {
      auto it = encoder_.find(t);
      id = it == encoder_.end() ? unk_id_ : it->second;
    }
    ids.push_back(id);
  }
  return ids;
}

CLIPTokenizerOutput CLIPTokenizer::operator()(const std::vector<std::string>& prompts, int64_t max_length) const {
  const int64_t len = max_length < 0 ? model_max_length_ : max_length;
  if (len < 2) throw InputError("CLIPTokenizer: max_length must be at least 2 (room for bos and eos), got " + std::to_string(len));
  if (pad_id_ < 0) throw InputError("CLIPTokenizer: the tokenizer in '" + folder_ + "' has no pad_token; cannot pad to max_length");
  const int64_t n = static_cast<int64_t>(prompts.size());
  at::Tensor ids = at::full({n, len}, pad_id_, at::kLong);   // [N, max_length]
  at::Tensor mask = at::zeros({n, len}, at::kLong);          // [N, max_length]
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int64_t> body = encode(prompts[i], static_cast<size_t>(len - 2));
    int64_t k = 0;
    ids_a[i][k++] = bos_id_;
    for (int64_t id : body) ids_a[i][k++] = id;
    ids_a[i][k++] = eos_id_;
    for (int64_t j = 0; j < k; ++j) mask_a[i][j] = 1;
  }
  return {ids, mask};
}

}  // namespace tessera
