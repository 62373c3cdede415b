#pragma once
/// CLIP tokenizer ("tokenizer" kind) and text-encoder ("component" kind, classes CLIPTextModel /
/// CLIPTextModelWithProjection) cases of the parity runner: tiny_sd_tokenizer, tiny_sdxl_tokenizers,
/// tiny_sd_text_encoder, tiny_sdxl_text_encoders.
#include "tools/parity/parity.h"

namespace tessera {

/// Tokenizes params.prompts with `models_dir/params.model/<tokenizer folder>` and compares every expected
/// `input_ids[_K]` / `attention_mask[_K]` ("" → params.subfolder or "tokenizer", "_2" → "tokenizer_2"), plus
/// params.untruncated_lengths when given.
ParityResult run_tokenizer_case(const ParityCase& c);

/// Runs the text encoder(s) of `models_dir/params.model` on the case's input ids and compares last_hidden_state,
/// pooler_output, text_embeds, hidden_states_penultimate (hidden_states[-2]) and hidden_states_embeddings
/// (hidden_states[0]). Names without prefix use params.subfolder and `input_ids`; `te1_` / `te2_` use
/// text_encoder + input_ids / text_encoder_2 + input_ids_2. The class comes from config.json's architectures.
ParityResult run_text_encoder_case(const ParityCase& c);

/// Registers run_tokenizer_case for "tokenizer" and run_text_encoder_case for the CLIP component classes.
void register_text_case_runners();

}  // namespace tessera
