#pragma once
/// PyTorch `.ckpt` / `.pt` files (torch.save's zip format, torch >= 1.6) read into a tensor map without running
/// any Python: the pickle is interpreted by a small restricted unpickler that knows only the globals a state dict
/// needs and never calls anything, so a checkpoint cannot execute code the way torch.load(weights_only=False) lets
/// it.
///
///   if (is_torch_zip_checkpoint(path)) {
///     std::map<std::string, at::Tensor> sd = read_torch_checkpoint(path);  // "model.diffusion_model.…" -> tensor
///   }
///
/// Why not LibTorch's torch::jit::Unpickler: it turns every collections.OrderedDict into None (so any
/// `torch.save(model.state_dict())` fails with "Expected GenericDict but got None", pytorch/pytorch#100741, in
/// 1.13 and most 2.x releases), and it lacks the APPEND, POP and short LONG1 opcodes plain pickles use. The zip
/// container is still read with LibTorch's caffe2::serialize::PyTorchStreamReader.
#include <ATen/Tensor.h>

#include <map>
#include <string>

namespace tessera {

/// True when `path` starts with the zip magic "PK\x03\x04" (a torch.save file of torch >= 1.6). False for a file
/// that cannot be opened or is shorter than 4 bytes.
bool is_torch_zip_checkpoint(const std::string& path);

/// Every tensor of a torch.save zip checkpoint by name. Only the globals a state dict needs are understood:
/// torch._utils._rebuild_tensor_v2 (and _rebuild_tensor, _rebuild_parameter), collections.OrderedDict and the
/// torch.*Storage types; the rest of the pickle (protocols 2-5) is plain containers, numbers and strings.
///
/// Any other global (a Lightning callback class, argparse.Namespace, numpy, an arbitrary function such as
/// posix.system) becomes an inert placeholder that records only its "module.name". It is never imported, called or
/// constructed: REDUCE, NEWOBJ and BUILD on a placeholder give another placeholder, items set on one are dropped,
/// and a tensor rebuilt from one (a foreign storage type, say) is a placeholder too. This is safe because a pickle
/// runs code only by importing a global's module and calling the global (or __setstate__, append, __setitem__ on
/// what it built), and this reader does none of that: a placeholder is data, like a string. Where a placeholder ends
/// up decides: inside the returned state dict (as a key or value, including a tensor built from one), as the
/// 'state_dict' entry itself, or as the whole file's content, it is a ModelLoadError naming the file, the key and
/// the global, with how to convert the file to safetensors; anywhere else (the ignored entries of Lightning's
/// layout, such as the ModelCheckpoint class keying the "callbacks" entry of CompVis's and runwayml's Stable
/// Diffusion .ckpt files) it is dropped.
///
/// A top-level dict with a "state_dict" entry that is a dict is unwrapped (Lightning's layout) and its other
/// entries (global_step, epoch, callbacks, optimizer states, hyper_parameters…) are ignored; without that entry the
/// top-level dict is the state dict. After unwrapping, keys must be strings and values tensors; anything else is a
/// ModelLoadError naming the key. Tensors come back on the CPU whatever device they were saved from, with their
/// saved dtype and shape; they view the storage read from the file (tensors that shared a storage still share it),
/// except non-contiguous ones, which are made contiguous copies.
///
/// A missing file, a legacy (pre-1.6, non-zip) file, a truncated or structurally corrupt zip and a malformed pickle
/// are ModelLoadErrors with the file in their location. Record CRCs are not verified (LibTorch's miniz is built
/// without reader CRC checks), so flipped bytes inside tensor data go unnoticed, as in a safetensors file. The
/// tensors are read into memory (like torch.load); nothing is memory-mapped.
std::map<std::string, at::Tensor> read_torch_checkpoint(const std::string& path);

}  // namespace tessera
