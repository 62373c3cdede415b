#pragma once
/// T5Tokenizer: transformers' slow T5 tokenizer (models/t5/tokenization_t5.py, legacy behaviour) on Debian's
/// libsentencepiece, as the FLUX / SD3 pipelines call their `tokenizer_2` / `tokenizer_3`:
/// `tokenizer(prompts, padding="max_length", max_length=L, truncation=True)`.
///
///   auto tok = T5Tokenizer::from_pretrained("tiny-flux/tokenizer_2");
///   T5TokenizerOutput out = (*tok)({"a photo of a cat", ""}, 512);  // input_ids, attention_mask [2, 512]
///   if (out.untruncated_lengths[0] > 512) { /* the pipeline warns: the prompt was truncated */ }
///
/// The transformers layer over sentencepiece: the text is first split on the added tokens (leftmost-longest
/// match; `</s>`, `<unk>`, `<pad>` kept verbatim, `<extra_id_k>` also eat the whitespace on both sides, as their
/// lstrip/rstrip flags say), every other segment is encoded by sentencepiece on its own (nmt_nfkc normalisation
/// and the dummy `▁` prefix per segment, unknown characters → `<unk>`), pieces map to ids (added tokens first),
/// the ids are truncated to L-1, `</s>` is appended unless already last, and rows are right-padded with the pad
/// id (attention_mask 1 on the real tokens). Prompt text is untrusted: invalid UTF-8 bytes become U+FFFD first.
///
/// Only spiece.model is read (T5TokenizerFast folders ship it too); a folder with only tokenizer.json is refused.
/// Not supported (refused by name when a folder asks for it): `legacy: false` (transformers' newer handling of
/// the text after special tokens), non-empty `sp_model_kwargs` (sampling), single_word added tokens.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tessera/components.h"

namespace tessera {

class Registry;
class SentencePieceModel;

/// Result of a batched call: input_ids and attention_mask [N, max_length] int64, and per prompt the length of its
/// untruncated encoding including the final `</s>` (diffusers warns when it exceeds max_length).
struct T5TokenizerOutput {
  at::Tensor input_ids;
  at::Tensor attention_mask;
  std::vector<int64_t> untruncated_lengths;
};

/// transformers' T5Tokenizer (slow, legacy=True) from a tokenizer folder.
class T5Tokenizer final : public Component {
 public:
  /// Reads `folder`/spiece.model and, when present, tokenizer_config.json (legacy, extra_ids, model_max_length,
  /// eos/unk/pad tokens, added_tokens_decoder, sp_model_kwargs), special_tokens_map.json and added_tokens.json.
  /// Without added_tokens_decoder the added tokens are derived as T5Tokenizer.__init__ does: `<extra_id_k>` =
  /// pieces - 1 + extra_ids - k (lstrip/rstrip), the special tokens at their sentencepiece ids.
  /// `type_name` is the component type reported by type() ("T5Tokenizer" or "T5TokenizerFast").
  /// ModelLoadError naming the file: a missing folder or spiece.model (saying so when only tokenizer.json is
  /// there), a corrupt spiece.model, malformed JSON, unsupported options, special tokens absent from the vocabulary.
  static std::shared_ptr<T5Tokenizer> from_pretrained(const std::string& folder,
                                                      const std::string& type_name = "T5Tokenizer");
  ~T5Tokenizer() override;

  std::string type() const override { return type_name_; }
  size_t nbytes() const override;

  /// Token strings of `text` (no `</s>`), like `tokenizer.tokenize(text)` (sentencepiece's surface piece for an
  /// unknown character, which maps to unk_token_id).
  std::vector<std::string> tokenize(const std::string& text) const;
  /// Token ids of `text` (no `</s>` appended), like `tokenizer.encode(text, add_special_tokens=False)`.
  std::vector<int64_t> encode(const std::string& text) const;

  /// `tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True)`. `max_length` < 0 means
  /// model_max_length (InputError when the folder sets none); it must be at least 1.
  T5TokenizerOutput operator()(const std::vector<std::string>& prompts, int64_t max_length = -1) const;

  /// Length of encode(text) plus the `</s>` that would be appended (none when the text already ends with it).
  int64_t untruncated_length(const std::string& text) const;

  std::optional<int64_t> model_max_length() const { return model_max_length_; }
  int64_t eos_token_id() const { return eos_id_; }
  int64_t unk_token_id() const { return unk_id_; }
  /// -1 when the folder has no pad token (then operator() refuses to pad).
  int64_t pad_token_id() const { return pad_id_; }
  /// sentencepiece's piece count (transformers' `vocab_size`; the `<extra_id_k>` ids lie above it).
  int64_t vocab_size() const;
  int64_t extra_ids() const { return extra_ids_; }
  /// Id of an added token or a sentencepiece piece; std::nullopt when neither (sentencepiece's unk otherwise).
  std::optional<int64_t> token_to_id(const std::string& token) const;

 private:
  T5Tokenizer();
  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool lstrip = false, rstrip = false;
  };
  /// Pieces and ids of `text` (both outputs optional).
  void run(const std::string& text, std::vector<std::string>* pieces, std::vector<int64_t>* ids) const;

  std::unique_ptr<SentencePieceModel> sp_;
  std::vector<AddedToken> added_tokens_;                          ///< by content length, longest first
  std::unordered_map<std::string, int64_t> added_ids_;            ///< content → id
  std::optional<int64_t> model_max_length_;
  int64_t eos_id_ = 1, unk_id_ = 2, pad_id_ = 0, extra_ids_ = 100;
  size_t model_bytes_ = 0;
  std::string folder_, type_name_;
};

/// Registers the component types "T5Tokenizer" and "T5TokenizerFast" (Tokenizer category, both read
/// spiece.model; `from` is required). Called by register_t5_encoder.
void register_t5_tokenizer(Registry& registry);

}  // namespace tessera
