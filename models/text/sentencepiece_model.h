#pragma once
/// A sentencepiece model (spiece.model) through Debian's libsentencepiece, which Tessera loads in isolation:
/// libsentencepiece.so.0 bundles protobuf-lite and exports its symbols, which clash with LibTorch's libprotobuf in
/// one process (a crash before main). The library libtessera_sentencepiece (models/text/sentencepiece/shim.cpp)
/// links it and is opened with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) from the folder of libtessera_models.
///
///   SentencePieceModel sp;
///   sp.load(bytes);                        // ModelLoadError-free: returns the error text, "" on success
///   std::vector<std::string> pieces = sp.encode("a fox");
#include <string>
#include <vector>

namespace tessera {

class SentencePieceModel {
 public:
  /// Opens the library on first use; ModelLoadError naming it when it cannot be found or opened.
  SentencePieceModel();
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  /// Parses a serialized ModelProto; "" on success, else sentencepiece's message.
  std::string load(const std::string& serialized);
  int piece_size() const;
  int piece_to_id(const std::string& piece) const;
  bool is_unknown(int id) const;
  int unk_id() const;
  std::string id_to_piece(int id) const;
  /// The pieces of `text`; InputError with sentencepiece's message when it fails.
  std::vector<std::string> encode(const std::string& text) const;

 private:
  void* sp_ = nullptr;
};

}  // namespace tessera
