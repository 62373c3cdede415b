#include "models/text/t5_tokenizer.h"

#include "models/text/sentencepiece_model.h"


#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "tessera/registry.h"
#include "models/loading/diffusers_folder.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

// ---- UTF-8 ----

/// Length of the well-formed UTF-8 sequence at s[i] (with its code point), or 0 when the bytes there are not one.
size_t utf8_sequence(const std::string& s, size_t i, char32_t* cp_out) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char c = p[i];
  if (c < 0x80) {
    *cp_out = c;
    return 1;
  }
  size_t len = 0;
  char32_t cp = 0, min = 0;
  if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
  if (len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((p[i + k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i + k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *cp_out = cp;
  return len;
}

/// `s` with every byte that does not start a well-formed UTF-8 sequence replaced by U+FFFD (Python strings are
/// always valid Unicode; this is what a Python caller would have decoded with errors="replace").
std::string sanitize_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const size_t len = utf8_sequence(s, i, &cp);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

/// Python's str.isspace() for one code point.
bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/// Python's str.lstrip() / str.rstrip() (Unicode whitespace) on valid UTF-8.
void py_lstrip(std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp = 0;
    const size_t len = utf8_sequence(s, i, &cp);
    if (len == 0 || !is_py_space(cp)) break;
    i += len;
  }
  s.erase(0, i);
}

void py_rstrip(std::string& s) {
  while (!s.empty()) {
    size_t start = s.size() - 1;  // the last code point starts at the last non-continuation byte
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    char32_t cp = 0;
    if (utf8_sequence(s, start, &cp) != s.size() - start || !is_py_space(cp)) break;
    s.erase(start);
  }
}

// ---- files ----

std::string read_binary(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelLoadError("T5Tokenizer: cannot open '" + path.string() + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ModelLoadError("T5Tokenizer: cannot read '" + path.string() + "'");
  return ss.str();
}

/// A JSON object from `path`; an empty object when the file is absent and optional.
nlohmann::json read_json_object(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return nlohmann::json::object();
  nlohmann::json j = read_json_file(path.string());
  if (!j.is_object()) throw ModelLoadError("T5Tokenizer: '" + path.string() + "' is not a JSON object");
  return j;
}

/// A special token entry: a string, {"content": …} (AddedToken), or null (none).
std::optional<std::string> token_content(const nlohmann::json& j, const std::string& key, const fs::path& file) {
  if (j.is_null()) return std::nullopt;
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  throw ModelLoadError("T5Tokenizer: '" + file.string() + "': " + key +
                       " is neither a string nor an object with a string 'content'");
}

bool json_flag(const nlohmann::json& obj, const char* key, const std::string& where, const fs::path& file) {
  if (!obj.contains(key) || obj[key].is_null()) return false;
  if (!obj[key].is_boolean())
    throw ModelLoadError("T5Tokenizer: '" + file.string() + "': " + where + "." + key + " is not a bool");
  return obj[key].get<bool>();
}

}  // namespace

T5Tokenizer::T5Tokenizer() : sp_(std::make_unique<SentencePieceModel>()) {}
T5Tokenizer::~T5Tokenizer() = default;

// ---- loading ----

std::shared_ptr<T5Tokenizer> T5Tokenizer::from_pretrained(const std::string& folder, const std::string& type_name) {
  std::shared_ptr<T5Tokenizer> tok(new T5Tokenizer());
  tok->folder_ = folder;
  tok->type_name_ = type_name;
  const fs::path dir(folder);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw ModelLoadError(type_name + ": tokenizer folder '" + folder + "' is missing");

  // spiece.model: the sentencepiece model both the slow and the fast tokenizer folders ship.
  const fs::path model_path = dir / "spiece.model";
  if (!fs::is_regular_file(model_path, ec)) {
    if (fs::exists(dir / "tokenizer.json", ec))
      throw ModelLoadError(type_name + ": '" + folder + "' has tokenizer.json but no spiece.model; Tessera's T5 "
                           "tokenizer needs the sentencepiece model (spiece.model, shipped with T5TokenizerFast "
                           "folders such as FLUX.1's tokenizer_2); copy it from the original model folder");
    throw ModelLoadError(type_name + ": '" + model_path.string() + "' (the sentencepiece model) is missing");
  }
  const std::string bytes = read_binary(model_path);
  const std::string status = tok->sp_->load(bytes);
  if (!status.empty())
    throw ModelLoadError(type_name + ": '" + model_path.string() + "' is not a valid sentencepiece model (" +
                         status + ")");
  if (tok->sp_->piece_size() <= 0)
    throw ModelLoadError(type_name + ": '" + model_path.string() + "' has no pieces");
  tok->model_bytes_ = bytes.size();
  const int64_t pieces = tok->sp_->piece_size();

  const fs::path config_path = dir / "tokenizer_config.json", map_path = dir / "special_tokens_map.json",
                 added_path = dir / "added_tokens.json";
  const nlohmann::json config = read_json_object(config_path);
  const nlohmann::json special_map = read_json_object(map_path);

  // Options that change the algorithm and that Tessera does not implement are refused, never ignored.
  if (config.contains("legacy") && !config["legacy"].is_null()) {
    if (!config["legacy"].is_boolean())
      throw ModelLoadError(type_name + ": '" + config_path.string() + "': legacy is not a bool");
    if (!config["legacy"].get<bool>())
      throw ModelLoadError(type_name + ": '" + config_path.string() + "': legacy: false (transformers' non-legacy "
                           "handling of the text after special tokens, which needs sentencepiece without its dummy "
                           "prefix) is not supported; Tessera implements legacy: true, the FLUX.1 / SD3 setting");
  }
  if (config.contains("sp_model_kwargs") && !config["sp_model_kwargs"].is_null() &&
      !(config["sp_model_kwargs"].is_object() && config["sp_model_kwargs"].empty()))
    throw ModelLoadError(type_name + ": '" + config_path.string() + "': sp_model_kwargs " +
                         config["sp_model_kwargs"].dump() + " are not supported (deterministic encoding only)");
  if (config.contains("extra_ids") && !config["extra_ids"].is_null()) {
    if (!config["extra_ids"].is_number_integer() || config["extra_ids"].get<int64_t>() < 0)
      throw ModelLoadError(type_name + ": '" + config_path.string() + "': extra_ids is not a non-negative integer");
    tok->extra_ids_ = config["extra_ids"].get<int64_t>();
  }
  if (config.contains("model_max_length") && !config["model_max_length"].is_null()) {
    const auto& m = config["model_max_length"];
    if (!m.is_number()) throw ModelLoadError(type_name + ": '" + config_path.string() + "': model_max_length is not a number");
    const double v = m.get<double>();
    if (v < 1) throw ModelLoadError(type_name + ": '" + config_path.string() + "': model_max_length < 1");
    if (v <= 1e9) tok->model_max_length_ = static_cast<int64_t>(v);  // transformers writes int(1e30) for "unset"
  }

  // Added tokens: tokenizer_config.json's added_tokens_decoder when present (ids and strip flags as saved).
  std::map<std::string, AddedToken> added;  // content → token
  auto add = [&](AddedToken t, const std::string& source) {
    auto it = added.find(t.content);
    if (it != added.end() && it->second.id != t.id)
      throw ModelLoadError(type_name + ": added token '" + t.content + "' has id " + std::to_string(t.id) + " in " +
                           source + " but " + std::to_string(it->second.id) + " elsewhere in '" + folder + "'");
    if (it == added.end()) added.emplace(t.content, t);
  };
  if (config.contains("added_tokens_decoder") && !config["added_tokens_decoder"].is_null()) {
    const auto& dec = config["added_tokens_decoder"];
    if (!dec.is_object())
      throw ModelLoadError(type_name + ": '" + config_path.string() + "': added_tokens_decoder is not an object");
    for (auto it = dec.begin(); it != dec.end(); ++it) {
      AddedToken t;
      try {
        size_t used = 0;
        t.id = std::stoll(it.key(), &used);
        if (used != it.key().size() || t.id < 0) throw std::invalid_argument("id");
      } catch (const std::exception&) {
        throw ModelLoadError(type_name + ": '" + config_path.string() + "': added token id '" + it.key() +
                             "' is not a non-negative integer");
      }
      const std::string where = "added_tokens_decoder." + it.key();
      const auto content = token_content(it.value(), where, config_path);
      if (!content || content->empty())
        throw ModelLoadError(type_name + ": '" + config_path.string() + "': " + where + " is empty");
      t.content = *content;
      if (it.value().is_object()) {
        t.lstrip = json_flag(it.value(), "lstrip", where, config_path);
        t.rstrip = json_flag(it.value(), "rstrip", where, config_path);
        if (json_flag(it.value(), "single_word", where, config_path))
          throw ModelLoadError(type_name + ": '" + config_path.string() + "': " + where +
                               " is a single_word added token, which Tessera does not support");
      }
      add(t, "'" + config_path.string() + "'");
    }
  } else {
    // T5Tokenizer.__init__: <extra_id_k> = pieces - 1 + extra_ids - k, stripping whitespace on both sides.
    for (int64_t k = 0; k < tok->extra_ids_; ++k) {
      AddedToken t;
      t.content = "<extra_id_" + std::to_string(k) + ">";
      t.id = pieces - 1 + tok->extra_ids_ - k;
      t.lstrip = t.rstrip = true;
      add(t, "extra_ids");
    }
    const nlohmann::json added_json = read_json_object(added_path);
    for (auto it = added_json.begin(); it != added_json.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
        throw ModelLoadError(type_name + ": '" + added_path.string() + "': token '" + it.key() +
                             "' has no non-negative integer id");
      AddedToken t;
      t.content = it.key();
      t.id = it.value().get<int64_t>();
      add(t, "'" + added_path.string() + "'");
    }
  }

  // Special tokens (tokenizer_config.json, then special_tokens_map.json, then T5's defaults) are added tokens
  // too: split out of the text.
  auto special = [&](const std::string& key, const std::string& fallback) -> std::optional<std::string> {
    if (config.contains(key)) return token_content(config[key], key, config_path);
    if (special_map.contains(key)) return token_content(special_map[key], key, map_path);
    return fallback;
  };
  auto special_id = [&](const std::string& key, const std::optional<std::string>& content) -> int64_t {
    if (!content) return -1;
    auto a = added.find(*content);
    if (a != added.end()) return a->second.id;
    const int id = tok->sp_->piece_to_id(*content);
    if (tok->sp_->is_unknown(id) && tok->sp_->id_to_piece(id) != *content)
      throw ModelLoadError(type_name + ": " + key + " '" + *content + "' is neither an added token nor a piece of '" +
                           model_path.string() + "'");
    AddedToken t;
    t.content = *content;
    t.id = id;
    added.emplace(t.content, t);
    return id;
  };
  tok->eos_id_ = special_id("eos_token", special("eos_token", "</s>"));
  tok->unk_id_ = special_id("unk_token", special("unk_token", "<unk>"));
  tok->pad_id_ = special_id("pad_token", special("pad_token", "<pad>"));
  if (tok->eos_id_ < 0) throw ModelLoadError(type_name + ": '" + folder + "' has no eos_token (T5 appends it)");
  if (tok->unk_id_ < 0) tok->unk_id_ = tok->sp_->unk_id();

  for (auto& kv : added) {
    tok->added_ids_[kv.first] = kv.second.id;
    tok->added_tokens_.push_back(kv.second);
  }
  std::stable_sort(tok->added_tokens_.begin(), tok->added_tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  return tok;
}

size_t T5Tokenizer::nbytes() const { return model_bytes_; }

int64_t T5Tokenizer::vocab_size() const { return sp_->piece_size(); }

std::optional<int64_t> T5Tokenizer::token_to_id(const std::string& token) const {
  auto it = added_ids_.find(token);
  if (it != added_ids_.end()) return it->second;
  const int id = sp_->piece_to_id(token);
  if (sp_->is_unknown(id) && sp_->id_to_piece(id) != token) return std::nullopt;
  return id;
}

// ---- encoding ----

void T5Tokenizer::run(const std::string& raw, std::vector<std::string>* pieces, std::vector<int64_t>* ids) const {
  const std::string text = sanitize_utf8(raw);
  // Split on the added tokens: at each position the longest added token that starts there (the tokens are sorted
  // longest first), as transformers' trie does.
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
  // lstrip / rstrip added tokens eat the whitespace of the text next to them (Python's str.strip whitespace).
  for (size_t k = 0; k < segments.size(); ++k) {
    const AddedToken* t = segments[k].added;
    if (!t) continue;
    if (t->rstrip && k + 1 < segments.size() && !segments[k + 1].added) py_lstrip(segments[k + 1].text);
    if (t->lstrip && k > 0 && !segments[k - 1].added) py_rstrip(segments[k - 1].text);
  }
  for (const auto& seg : segments) {
    if (seg.added) {
      if (pieces) pieces->push_back(seg.text);
      if (ids) ids->push_back(seg.added->id);
      continue;
    }
    if (seg.text.empty()) continue;
    // legacy=True: each segment is encoded on its own (with its own dummy prefix), pieces mapped to ids.
    std::vector<std::string> sp_pieces = sp_->encode(seg.text);
    for (auto& p : sp_pieces) {
      if (ids) {
        auto a = added_ids_.find(p);
        ids->push_back(a != added_ids_.end() ? a->second : static_cast<int64_t>(sp_->piece_to_id(p)));
      }
      if (pieces) pieces->push_back(std::move(p));
    }
  }
}

std::vector<std::string> T5Tokenizer::tokenize(const std::string& text) const {
  std::vector<std::string> out;
  run(text, &out, nullptr);
  return out;
}

std::vector<int64_t> T5Tokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  run(text, nullptr, &out);
  return out;
}

int64_t T5Tokenizer::untruncated_length(const std::string& text) const {
  const std::vector<int64_t> ids = encode(text);
  const bool ends_with_eos = !ids.empty() && ids.back() == eos_id_;
  return static_cast<int64_t>(ids.size()) + (ends_with_eos ? 0 : 1);
}

T5TokenizerOutput T5Tokenizer::operator()(const std::vector<std::string>& prompts, int64_t max_length) const {
  if (max_length < 0 && !model_max_length_)
    throw InputError(type_name_ + ": the tokenizer in '" + folder_ +
                     "' sets no model_max_length; pass max_length (FLUX.1 uses 512, SD3 256)");
  const int64_t len = max_length < 0 ? *model_max_length_ : max_length;
  if (len < 1) throw InputError(type_name_ + ": max_length must be at least 1 (room for </s>), got " + std::to_string(len));
  if (pad_id_ < 0)
    throw InputError(type_name_ + ": the tokenizer in '" + folder_ + "' has no pad_token; cannot pad to max_length");
  const int64_t n = static_cast<int64_t>(prompts.size());
  T5TokenizerOutput out;
  out.input_ids = at::full({n, len}, pad_id_, at::kLong);  // [N, max_length]
  out.attention_mask = at::zeros({n, len}, at::kLong);     // [N, max_length]
  auto ids_a = out.input_ids.accessor<int64_t, 2>();
  auto mask_a = out.attention_mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> ids = encode(prompts[i]);
    const bool ends_with_eos = !ids.empty() && ids.back() == eos_id_;
    out.untruncated_lengths.push_back(static_cast<int64_t>(ids.size()) + (ends_with_eos ? 0 : 1));
    // transformers truncates to max_length - 1 (room for one special token), then appends </s> unless present.
    if (static_cast<int64_t>(ids.size()) > len - 1) ids.resize(static_cast<size_t>(len - 1));
    if (ids.empty() || ids.back() != eos_id_) ids.push_back(eos_id_);
    for (size_t j = 0; j < ids.size(); ++j) {
      ids_a[i][static_cast<int64_t>(j)] = ids[j];
      mask_a[i][static_cast<int64_t>(j)] = 1;
    }
  }
  return out;
}

// ---- registration ----

void register_t5_tokenizer(Registry& registry) {
  for (const char* name : {"T5Tokenizer", "T5TokenizerFast"}) {
    const std::string type = name;
    registry.add_component_type(
        {type, ComponentCategory::Tokenizer,
         "transformers' T5 tokenizer (sentencepiece spiece.model, legacy), padding to max_length with </s> appended" +
             std::string(type == "T5TokenizerFast" ? "; reads the folder's spiece.model, not tokenizer.json" : ""),
         [type](const ComponentSpec& spec) -> ComponentPtr {
           if (spec.from.empty())
             throw ValidationError("component '" + spec.name + "': " + type + " needs `from` (a tokenizer folder)");
           return T5Tokenizer::from_pretrained(component_dir(spec.from, spec.subfolder), type);
         },
         {}});
  }
}

}  // namespace tessera
