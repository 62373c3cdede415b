#pragma once
/// CLIPTokenizer: transformers' slow CLIP tokenizer (byte-level BPE with `</w>` word ends), as diffusers' SD and
/// SDXL pipelines call it: `tokenizer(prompts, padding="max_length", max_length=77, truncation=True)`.
///
///   auto tok = CLIPTokenizer::from_pretrained("sd15/tokenizer");
///   CLIPTokenizerOutput out = tok->operator()({"a photo of a cat", ""});  // input_ids, attention_mask [2, 77]
///
/// Text handling follows transformers without ftfy (its fallback path): added/special tokens are split out
/// first (exact, case-sensitive match; SDXL's second tokenizer has "!" as its pad token, so every "!" becomes
/// that token), then each remaining piece goes through BERT's BasicTokenizer cleanup (control characters and
/// U+FFFD dropped, Unicode spaces to " ", CJK ideographs spaced out, whitespace collapsed, lowercased), the CLIP
/// pre-split regex, and BPE.
///
/// Prompt text is untrusted: invalid UTF-8 bytes are replaced by U+FFFD, which the cleanup then drops (as
/// transformers drops U+FFFD), so they never reach the vocabulary. Time is O(n log n) in the prompt length
/// (heap-based BPE, results identical to transformers' quadratic loop) and truncated calls stop reading after
/// the tokens they keep. Known deviations: no NFC normalisation (input is assumed to be NFC already, which is
/// what keyboards and most text produce), lowercasing is the simple Unicode mapping (plus U+0130 and final
/// sigma as Python has them).
#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tessera/components.h"

namespace tessera {

/// Result of a batched tokenizer call: input_ids and attention_mask, both [N, max_length] int64.
struct CLIPTokenizerOutput {
  at::Tensor input_ids;
  at::Tensor attention_mask;
};

/// transformers' CLIPTokenizer (slow), loaded from a tokenizer folder (vocab.json, merges.txt,
/// tokenizer_config.json / special_tokens_map.json).
class CLIPTokenizer final : public Component {
 public:
  /// Reads `folder`/vocab.json, merges.txt (first line `#version…`) and, when present, tokenizer_config.json
  /// and special_tokens_map.json (model_max_length, bos/eos/unk/pad tokens, added_tokens_decoder). A
  /// tokenizer_config.json without added_tokens_decoder (transformers < 4.34) gives way to
  /// special_tokens_map.json, as in transformers. Missing or malformed files: ModelLoadError naming the file.
  static std::shared_ptr<CLIPTokenizer> from_pretrained(const std::string& folder);
  /// Same, with vocab.json and merges.txt read from `vocab_folder` instead (a shipped defaults tokenizer folder,
  /// models/loading/model_defaults.h, holds only the two configs; the vocabulary lives once in clip/).
  ///
  ///   auto tok = CLIPTokenizer::from_pretrained(shipped_family_dir("sdxl-base") + "/tokenizer_2",
  ///                                             shipped_clip_vocab_dir());
  static std::shared_ptr<CLIPTokenizer> from_pretrained(const std::string& folder, const std::string& vocab_folder);

  std::string type() const override { return "CLIPTokenizer"; }
  size_t nbytes() const override;

  /// Token strings of `text` (no bos/eos), like `tokenizer.tokenize(text)`. Stops once `max_tokens` are out.
  std::vector<std::string> tokenize(const std::string& text,
                                    size_t max_tokens = std::numeric_limits<size_t>::max()) const;
  /// Token ids of `text` (no bos/eos). Stops once `max_tokens` ids are out.
  std::vector<int64_t> encode(const std::string& text, size_t max_tokens = std::numeric_limits<size_t>::max()) const;

  /// `tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True)`: each row is
  /// bos, up to max_length-2 ids, eos, then pad ids; attention_mask is 1 up to and including eos.
  /// `max_length` < 0 means model_max_length.
  CLIPTokenizerOutput operator()(const std::vector<std::string>& prompts, int64_t max_length = -1) const;

  /// Length of `[bos] + encode(text) + [eos]` before truncation (diffusers warns when it exceeds max_length).
  size_t untruncated_length(const std::string& text) const { return encode(text).size() + 2; }

  int64_t model_max_length() const { return model_max_length_; }
  int64_t bos_token_id() const { return bos_id_; }
  int64_t eos_token_id() const { return eos_id_; }
  int64_t pad_token_id() const { return pad_id_; }
  int64_t unk_token_id() const { return unk_id_; }
  size_t vocab_size() const { return encoder_.size(); }
  /// Id of a vocabulary token; std::nullopt when absent.
  std::optional<int64_t> token_to_id(const std::string& token) const;

 private:
  CLIPTokenizer() = default;
  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool lstrip = false, rstrip = false;
  };
  /// Appends the BPE tokens of one cleaned piece of text (no added tokens in it).
  void tokenize_piece(const std::string& text, size_t max_tokens, std::vector<std::string>& out) const;
  /// BPE of one pre-split word (already byte-encoded), space-free token strings; cached.
  std::vector<std::string> bpe(const std::string& word) const;

  std::unordered_map<std::string, int64_t> encoder_;
  std::unordered_map<std::string, int64_t> bpe_ranks_;  ///< "first second" -> merge rank
  std::vector<AddedToken> added_tokens_;                ///< longest first
  int64_t model_max_length_ = 77;
  int64_t bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
  std::string folder_;

  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<std::string>> cache_;
};

}  // namespace tessera
