#pragma once
/// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
///   [u64 little-endian header length N][N bytes JSON header][data]
/// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
/// first byte after the header) and may hold "__metadata__": {string: string}.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

/// The safetensors dtype name of a scalar type ("F32", "BF16", …); throws OutputError if the format has none.
const char* safetensors_dtype_name(at::ScalarType type);

/// Largest header a reader accepts; a bigger length field means a corrupt or hostile file.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

/// Where one tensor lives in a safetensors file (offsets relative to the data section).
struct SafetensorsEntry {
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// A safetensors file opened for reading. The file is memory-mapped (MAP_PRIVATE, copy-on-write): tensors are
/// views of the mapping without a copy and keep it alive after this object is gone, and writing into them never
/// changes the file. A tensor whose bytes are not aligned for its dtype is copied instead.
/// The header is untrusted: every problem (truncation, bad JSON, unknown dtype, bad shape, offsets out of range
/// or overlapping, size mismatch) is a ModelLoadError naming the file and the tensor, found when the file is
/// opened, before any tensor is materialised. Because each tensor's byte size must match the bytes that are
/// really in the file, no allocation is ever larger than the file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  /// Tensor names, sorted.
  std::vector<std::string> names() const;
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  /// dtype, shape and offsets of `name`, without reading data; ModelLoadError if absent.
  const SafetensorsEntry& entry(const std::string& name) const;
  /// The tensor `name` (CPU, contiguous). ModelLoadError if absent (with a did-you-mean hint).
  at::Tensor tensor(const std::string& name) const;
  /// Drops the resident pages of tensor `name` from this process (madvise MADV_DONTNEED on the whole pages inside
  /// its byte range) once a converted copy has been made, so a float16 file loaded as float32 does not keep both in
  /// memory. Only for tensors no view still reads: the pages read back from the file (the mapping is private and
  /// was never written) if touched again, so this is a memory hint, never a correctness change.
  void release(const std::string& name) const;
  /// The "__metadata__" strings (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;  ///< file offset of the data section (8 + N)
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `tensors` (made contiguous and copied to the CPU) and `metadata` to `path` atomically: a temp file in
/// the same directory is renamed over `path`, so readers never see a partial file and nothing is left behind on
/// error. Layout follows the reference implementation: tensors sorted by dtype size (largest first, so every
/// tensor is aligned to its element size) then name, header padded with spaces to a multiple of 8 bytes.
/// Throws OutputError (unwritable path, undefined tensor, dtype the format lacks, reserved name).
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Receives the bytes of a file being written.
using ByteSink = std::function<void(const void* data, size_t size)>;

/// Writes a file atomically: `body` writes the contents through a sink into a temp file in the same directory,
/// which is flushed, synced and renamed over `path`. On any error (including one thrown by `body`) the temp file
/// is removed; I/O errors are OutputError naming `path`. Shared by checkpoints and traces.
void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& body);

}  // namespace tessera
