#pragma once
/// The configs a single-file checkpoint lacks, shipped with Tessera (models/defaults/, installed to
/// share/tessera/defaults): one weight-less diffusers folder per model family (model_index.json, scheduler,
/// unet, vae, text encoder and tokenizer configs, as the published Hugging Face repos have them) and the CLIP
/// BPE vocabulary, once, in clip/.
///
///   std::string sd1 = shipped_family_dir("sd1");                     // …/defaults/sd1
///   ModelConfig unet = ModelConfig::from_folder(sd1, "unet");
///   auto tok = CLIPTokenizer::from_pretrained(sd1 + "/tokenizer", shipped_clip_vocab_dir());
#include <string>
#include <vector>

namespace tessera {

/// The defaults folder: $TESSERA_DEFAULTS_DIR when set, else the source tree's models/defaults when it exists,
/// else the installed <datadir>/tessera/defaults. ModelLoadError naming every place looked in when none exists.
std::string shipped_defaults_dir();

/// The shipped families (folder names): sd1, sd1-inpaint, sd2, sd2-v, sd2-inpaint, sdxl-base, sdxl-refiner,
/// sdxl-inpaint.
std::vector<std::string> shipped_families();

/// The folder of one family (a diffusers folder without weights). ModelLoadError listing the known families
/// for an unknown name, or naming the folder when the defaults folder lacks it.
std::string shipped_family_dir(const std::string& family);

/// The folder holding the CLIP vocabulary (vocab.json, merges.txt) every shipped tokenizer uses.
std::string shipped_clip_vocab_dir();

}  // namespace tessera
