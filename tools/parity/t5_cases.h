#pragma once
/// T5 cases of the parity runner (manifest_dit.json): the `t5_tokenizer` case ("tokenizer" kind, api
/// "transformers.T5Tokenizer …") and the `t5_encoder_*` cases ("component" kind, class T5EncoderModel).
#include "tools/parity/parity.h"

namespace tessera {

/// Tokenizes params.prompts with `models_dir/params.model/params.subfolder` (default tokenizer_2) at every
/// length of params.max_lengths and compares `input_ids_<L>` / `attention_mask_<L>` exactly, plus
/// params.untruncated_lengths, the special ids / sizes in params (pad/eos/unk_token_id, sentencepiece_pieces,
/// vocab_size, extra_ids) and, for every folder of params.same_spiece_model_in, the same input_ids.
ParityResult run_t5_tokenizer_case(const ParityCase& c);

/// Runs T5EncoderModel from `models_dir/params.model/params.subfolder` on the case's input_ids and compares
/// last_hidden_state (no mask), last_hidden_state_masked (with the case's attention_mask) and
/// hidden_states_embeddings (the token embeddings); params.feed_forward_proj and the sizes in params must match
/// the loaded config.
ParityResult run_t5_encoder_case(const ParityCase& c);

/// Registers run_t5_encoder_case for the component class "T5EncoderModel" and routes "tokenizer" cases whose api
/// starts with "transformers.T5Tokenizer" to run_t5_tokenizer_case, the others to the CLIP runner
/// (run_tokenizer_case). Call after register_text_case_runners (it replaces the "tokenizer" kind's runner).
void register_t5_case_runners();

}  // namespace tessera
