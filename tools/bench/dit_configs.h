#pragma once
/// The full-size DiT configurations the benchmarks build (random weights, never committed):
/// - Stable Diffusion 3.5 medium (stabilityai/stable-diffusion-3.5-medium): the transformer, both CLIP text encoders
///   (ViT-L/14 and OpenCLIP bigG/14 with projection), the T5 v1.1 XXL encoder, the 16-channel AutoencoderKL and the
///   FlowMatchEulerDiscreteScheduler, as their published config.json files (diffusers' / transformers' defaults for
///   every field not listed; bookkeeping fields such as initializer_range left out);
/// - a slice of FLUX.1-dev (black-forest-labs/FLUX.1-dev): the full-width FluxTransformer2DModel with one double-stream
///   and one single-stream block instead of 19 + 38 (the full model is 11.9 B parameters, 47.6 GB in float32).

namespace tessera::bench {

// stable-diffusion-3.5-medium transformer/config.json (SD3Transformer2DModel, 24 MMDiT-X blocks, the first 13 with
// the extra image self-attention, qk rms_norm).
inline const char* kSd35MTransformerConfig = R"({
  "_class_name": "SD3Transformer2DModel",
  "_diffusers_version": "0.40.0",
  "attention_head_dim": 64,
  "caption_projection_dim": 1536,
  "dual_attention_layers": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
  "in_channels": 16,
  "joint_attention_dim": 4096,
  "num_attention_heads": 24,
  "num_layers": 24,
  "out_channels": 16,
  "patch_size": 2,
  "pooled_projection_dim": 2048,
  "pos_embed_max_size": 384,
  "qk_norm": "rms_norm",
  "sample_size": 128
})";

// text_encoder/config.json: CLIP ViT-L/14 text tower with projection (openai/clip-vit-large-patch14's ids: bos 0,
// eos 2, so the pooled token is found by argmax of the ids, as transformers does for eos_token_id 2).
inline const char* kSd35MClipLConfig = R"({
  "architectures": ["CLIPTextModelWithProjection"],
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "torch_dtype": "float16",
  "vocab_size": 49408
})";

// text_encoder_2/config.json: OpenCLIP ViT-bigG/14 text tower with projection.
inline const char* kSd35MClipGConfig = R"({
  "architectures": ["CLIPTextModelWithProjection"],
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1280,
  "intermediate_size": 5120,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 20,
  "num_hidden_layers": 32,
  "pad_token_id": 1,
  "projection_dim": 1280,
  "torch_dtype": "float16",
  "vocab_size": 49408
})";

// text_encoder_3/config.json: the T5 v1.1 XXL encoder (google/t5-v1_1-xxl), 4.76 B parameters.
inline const char* kSd35MT5Config = R"({
  "architectures": ["T5EncoderModel"],
  "d_ff": 10240,
  "d_kv": 64,
  "d_model": 4096,
  "decoder_start_token_id": 0,
  "dense_act_fn": "gelu_new",
  "dropout_rate": 0.1,
  "eos_token_id": 1,
  "feed_forward_proj": "gated-gelu",
  "is_encoder_decoder": true,
  "is_gated_act": true,
  "layer_norm_epsilon": 1e-06,
  "model_type": "t5",
  "num_decoder_layers": 24,
  "num_heads": 64,
  "num_layers": 24,
  "pad_token_id": 0,
  "relative_attention_max_distance": 128,
  "relative_attention_num_buckets": 32,
  "torch_dtype": "float16",
  "use_cache": true,
  "vocab_size": 32128
})";

// vae/config.json: the SD3 AutoencoderKL (16 latent channels, no quant convs).
inline const char* kSd35MVaeConfig = R"({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.40.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "force_upcast": true,
  "in_channels": 3,
  "latent_channels": 16,
  "latents_mean": null,
  "latents_std": null,
  "layers_per_block": 2,
  "mid_block_add_attention": true,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 1024,
  "scaling_factor": 1.5305,
  "shift_factor": 0.0609,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "use_post_quant_conv": false,
  "use_quant_conv": false
})";

// scheduler/scheduler_config.json.
inline const char* kSd35MSchedulerConfig = R"({
  "_class_name": "FlowMatchEulerDiscreteScheduler",
  "_diffusers_version": "0.40.0",
  "num_train_timesteps": 1000,
  "shift": 3.0
})";

// model_index.json (the tokenizer classes are the ones of the copied tokenizer folders: T5Tokenizer reads
// spiece.model).
inline const char* kSd35MModelIndex = R"({
  "_class_name": "StableDiffusion3Pipeline",
  "_diffusers_version": "0.40.0",
  "feature_extractor": [null, null],
  "image_encoder": [null, null],
  "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
  "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
  "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
  "text_encoder_3": ["transformers", "T5EncoderModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "tokenizer_2": ["transformers", "CLIPTokenizer"],
  "tokenizer_3": ["transformers", "T5Tokenizer"],
  "transformer": ["diffusers", "SD3Transformer2DModel"],
  "vae": ["diffusers", "AutoencoderKL"]
})";

// FLUX.1-dev transformer/config.json with num_layers 19 → 1 and num_single_layers 38 → 1.
inline const char* kFluxSliceConfig = R"({
  "_class_name": "FluxTransformer2DModel",
  "_diffusers_version": "0.40.0",
  "attention_head_dim": 128,
  "axes_dims_rope": [16, 56, 56],
  "guidance_embeds": true,
  "in_channels": 64,
  "joint_attention_dim": 4096,
  "num_attention_heads": 24,
  "num_layers": 1,
  "num_single_layers": 1,
  "patch_size": 1,
  "pooled_projection_dim": 768
})";
/// FLUX.1's block counts, for the extrapolation from the slice.
inline constexpr int kFluxDoubleBlocks = 19;
inline constexpr int kFluxSingleBlocks = 38;

}  // namespace tessera::bench
