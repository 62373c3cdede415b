#include "models/text/sentencepiece_model.h"

#include <dlfcn.h>

#include <filesystem>
#include <mutex>

#include "tessera/error.h"

namespace tessera {

namespace {

using EmitFn = void (*)(void*, const char*, size_t);

struct Api {
  void* (*create)() = nullptr;
  void (*destroy)(void*) = nullptr;
  int (*load)(void*, const char*, size_t, char*, size_t) = nullptr;
  int (*piece_size)(void*) = nullptr;
  int (*piece_to_id)(void*, const char*, size_t) = nullptr;
  int (*is_unknown)(void*, int) = nullptr;
  int (*unk_id)(void*) = nullptr;
  void (*id_to_piece)(void*, int, EmitFn, void*) = nullptr;
  int (*encode)(void*, const char*, size_t, EmitFn, void*, char*, size_t) = nullptr;
};

constexpr const char* kLibrary = "libtessera_sentencepiece.so";

/// The folder of the library this function is in (libtessera_models), where the shim is built and installed.
std::string own_folder() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_folder), &info) == 0 || !info.dli_fname) return {};
  return std::filesystem::path(info.dli_fname).parent_path().string();
}

const Api& api() {
  static Api a;
  static std::string failure;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string dir = own_folder();
    const std::string path = dir.empty() ? kLibrary : (std::filesystem::path(dir) / kLibrary).string();
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) {
      const char* e = dlerror();
      failure = "cannot open '" + path + "' (" + (e ? e : "unknown error") + ")";
      return;
    }
    auto sym = [&](const char* name) {
      void* s = dlsym(h, name);
      if (!s && failure.empty()) failure = "'" + path + "' has no symbol " + name;
      return s;
    };
    a.create = reinterpret_cast<void* (*)()>(sym("tessera_spm_new"));
    a.destroy = reinterpret_cast<void (*)(void*)>(sym("tessera_spm_free"));
    a.load = reinterpret_cast<int (*)(void*, const char*, size_t, char*, size_t)>(sym("tessera_spm_load"));
    a.piece_size = reinterpret_cast<int (*)(void*)>(sym("tessera_spm_piece_size"));
    a.piece_to_id = reinterpret_cast<int (*)(void*, const char*, size_t)>(sym("tessera_spm_piece_to_id"));
    a.is_unknown = reinterpret_cast<int (*)(void*, int)>(sym("tessera_spm_is_unknown"));
    a.unk_id = reinterpret_cast<int (*)(void*)>(sym("tessera_spm_unk_id"));
    a.id_to_piece = reinterpret_cast<void (*)(void*, int, EmitFn, void*)>(sym("tessera_spm_id_to_piece"));
    a.encode =
        reinterpret_cast<int (*)(void*, const char*, size_t, EmitFn, void*, char*, size_t)>(sym("tessera_spm_encode"));
  });
  if (!failure.empty())
    throw ModelLoadError("the sentencepiece library for T5 tokenizers is not usable: " + failure, {}, {},
                         "it is built next to libtessera_models (apt install libsentencepiece-dev, then rebuild)");
  return a;
}

void append_string(void* ctx, const char* data, size_t size) { static_cast<std::string*>(ctx)->assign(data, size); }
void append_piece(void* ctx, const char* data, size_t size) {
  static_cast<std::vector<std::string>*>(ctx)->emplace_back(data, size);
}

}  // namespace

SentencePieceModel::SentencePieceModel() {
  sp_ = api().create();
  if (!sp_) throw ModelLoadError("sentencepiece: cannot create a processor");
}

SentencePieceModel::~SentencePieceModel() {
  if (sp_) api().destroy(sp_);
}

std::string SentencePieceModel::load(const std::string& serialized) {
  char err[512] = {0};
  if (api().load(sp_, serialized.data(), serialized.size(), err, sizeof(err)) == 0) return {};
  return err[0] ? std::string(err) : std::string("unknown error");
}

int SentencePieceModel::piece_size() const { return api().piece_size(sp_); }
int SentencePieceModel::piece_to_id(const std::string& piece) const {
  return api().piece_to_id(sp_, piece.data(), piece.size());
}
bool SentencePieceModel::is_unknown(int id) const { return api().is_unknown(sp_, id) != 0; }
int SentencePieceModel::unk_id() const { return api().unk_id(sp_); }

std::string SentencePieceModel::id_to_piece(int id) const {
  std::string out;
  api().id_to_piece(sp_, id, append_string, &out);
  return out;
}

std::vector<std::string> SentencePieceModel::encode(const std::string& text) const {
  std::vector<std::string> pieces;
  char err[512] = {0};
  if (api().encode(sp_, text.data(), text.size(), append_piece, &pieces, err, sizeof(err)) != 0)
    throw InputError(std::string("sentencepiece could not encode the prompt: ") + err);
  return pieces;
}

}  // namespace tessera
