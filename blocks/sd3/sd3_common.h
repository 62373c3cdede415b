#pragma once
/// Helpers the sd3.* blocks share: the image size rule of the SD3 pipelines. (A model folder of another family is
/// refused by the engine before any block runs: its model_index.json names other classes.)
#include <cstdint>
#include <string>
#include <utility>

#include "tessera/state.h"

namespace tessera {
class SD3Transformer2DModelImpl;
}  // namespace tessera

namespace tessera::sd3 {

/// The image size of a run: height and width inputs, each defaulting on its own to transformer.sample_size × the
/// VAE factor (`height = height or default_sample_size * vae_scale_factor`, both SD3 pipelines), checked to be
/// positive multiples of vae_scale_factor × patch_size (InputError naming both and the nearest valid size).
std::pair<int64_t, int64_t> image_size(const BlockState& s, const SD3Transformer2DModelImpl& transformer,
                                       int64_t vae_scale_factor);

/// The number of image tokens the transformer sees: (H / f / p) · (W / f / p) (the scheduler's dynamic shift).
int64_t image_seq_len(int64_t height, int64_t width, const SD3Transformer2DModelImpl& transformer,
                      int64_t vae_scale_factor);

}  // namespace tessera::sd3
