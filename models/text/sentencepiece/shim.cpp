// libtessera_sentencepiece: Debian's libsentencepiece behind a small C ABI, loaded by models/text/sentencepiece_model.cpp
// with dlopen(RTLD_LOCAL | RTLD_DEEPBIND). libsentencepiece.so.0 carries its own copy of protobuf-lite and exports
// those symbols; linked into the same process as LibTorch's libprotobuf.so.32, the two copies interpose each other
// and the process crashes in protobuf's static initialisation before main. Loaded this way, sentencepiece binds to
// its own protobuf and LibTorch's never sees it. Nothing throws across this boundary.
#include <sentencepiece_processor.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace {
void put_error(const std::string& message, char* err, size_t errlen) {
  if (!err || errlen == 0) return;
  std::strncpy(err, message.c_str(), errlen - 1);
  err[errlen - 1] = '\0';
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* tessera_spm_new() {
  try {
    return new sentencepiece::SentencePieceProcessor();
  } catch (...) {
    return nullptr;
  }
}

__attribute__((visibility("default"))) void tessera_spm_free(void* sp) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(sp);
}

/// 0 on success; else the status text in `err`.
__attribute__((visibility("default"))) int tessera_spm_load(void* sp, const char* data, size_t size, char* err,
                                                            size_t errlen) {
  try {
    auto status = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->LoadFromSerializedProto(
        absl::string_view(data, size));
    if (status.ok()) return 0;
    put_error(status.ToString(), err, errlen);
  } catch (const std::exception& e) {
    put_error(e.what(), err, errlen);
  } catch (...) {
    put_error("unknown error", err, errlen);
  }
  return 1;
}

__attribute__((visibility("default"))) int tessera_spm_piece_size(void* sp) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->GetPieceSize();
}

__attribute__((visibility("default"))) int tessera_spm_piece_to_id(void* sp, const char* piece, size_t size) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->PieceToId(absl::string_view(piece, size));
}

__attribute__((visibility("default"))) int tessera_spm_is_unknown(void* sp, int id) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->IsUnknown(id) ? 1 : 0;
}

__attribute__((visibility("default"))) int tessera_spm_unk_id(void* sp) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->unk_id();
}

/// Calls `emit(ctx, piece, size)` for the piece of `id`.
__attribute__((visibility("default"))) void tessera_spm_id_to_piece(void* sp, int id,
                                                                    void (*emit)(void*, const char*, size_t),
                                                                    void* ctx) {
  const std::string& piece = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->IdToPiece(id);
  emit(ctx, piece.data(), piece.size());
}

/// Encodes `text` into pieces, calling `emit` per piece; 0 on success, else the status text in `err`.
__attribute__((visibility("default"))) int tessera_spm_encode(void* sp, const char* text, size_t size,
                                                              void (*emit)(void*, const char*, size_t), void* ctx,
                                                              char* err, size_t errlen) {
  try {
    std::vector<std::string> pieces;
    auto status =
        static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Encode(absl::string_view(text, size), &pieces);
    if (!status.ok()) {
      put_error(status.ToString(), err, errlen);
      return 1;
    }
    for (const auto& p : pieces) emit(ctx, p.data(), p.size());
    return 0;
  } catch (const std::exception& e) {
    put_error(e.what(), err, errlen);
  } catch (...) {
    put_error("unknown error", err, errlen);
  }
  return 1;
}

}  // extern "C"
