#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "tessera/error.h"

// The format is little-endian and tensors are handed out as views of the file bytes.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace tessera {

namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  size_t itemsize;
  int rank;  ///< writer order: the reference sorts by its dtype enum, descending
};
const DtypeInfo kDtypes[] = {
    {"I64", at::kLong, 8, 10},    {"F64", at::kDouble, 8, 9}, {"F32", at::kFloat, 4, 8}, {"I32", at::kInt, 4, 7},
    {"BF16", at::kBFloat16, 2, 6}, {"F16", at::kHalf, 2, 5},  {"I16", at::kShort, 2, 4}, {"I8", at::kChar, 1, 3},
    {"U8", at::kByte, 1, 2},      {"BOOL", at::kBool, 1, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return &d;
  return nullptr;
}

std::string supported_dtypes() {
  std::string out;
  for (const auto& d : kDtypes) out += std::string(out.empty() ? "" : " ") + d.name;
  return out;
}

/// Strict UTF-8 check (no overlong forms, no surrogates, nothing above U+10FFFF); returns the offset of the
/// first bad byte or npos. nlohmann checks strings too, but its message does not say "UTF-8" for bytes outside them.
size_t find_invalid_utf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string::npos;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

const char* safetensors_dtype_name(at::ScalarType type) {
  const DtypeInfo* d = dtype_by_type(type);
  if (!d)
    throw OutputError(std::string("dtype ") + c10::toString(type) + " cannot be stored in safetensors", {}, {},
                      "supported: " + supported_dtypes());
  return d->name;
}

// ---------------------------------------------------------------- reader

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};

namespace {

/// Parses the JSON header; rejects duplicate keys at any depth (nlohmann would silently keep the last one,
/// and two entries for one name mean the file is not what its writer meant).
nlohmann::json parse_header(const std::string& text, const std::string& path) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) keys.emplace_back();
    else if (ev == E::object_end && !keys.empty()) keys.pop_back();
    else if (ev == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(std::string("header is not valid JSON: ") + e.what(), {path});
  }
  if (!duplicate.empty()) throw ModelLoadError("header has the key '" + duplicate + "' twice", {path});
  if (!j.is_object()) throw ModelLoadError(std::string("header must be a JSON object, got ") + j.type_name(), {path});
  return j;
}

uint64_t json_u64(const nlohmann::json& v, bool& ok) {
  ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  return ok ? v.get<uint64_t>() : 0;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const SourceLoc where{path};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ModelLoadError("cannot open safetensors file: " + errno_text(), where);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0) throw ModelLoadError("cannot stat safetensors file: " + errno_text(), where);
  if (!S_ISREG(st.st_mode)) throw ModelLoadError("not a regular file", where);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    throw ModelLoadError("file is truncated: " + std::to_string(file_size) + " bytes, less than the 8-byte header length",
                         where);

  auto mapping = std::make_shared<Mapping>();
  // Private + writable: callers may modify tensors in place; pages are copied on write, the file never changes.
  void* addr = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (addr == MAP_FAILED) throw ModelLoadError("cannot memory-map file: " + errno_text(), where);
  mapping->addr = addr;
  mapping->size = file_size;
  const auto* bytes = static_cast<const unsigned char*>(addr);

  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  if (n > kMaxSafetensorsHeaderBytes)
    throw ModelLoadError("header length " + std::to_string(n) + " is absurd (limit " +
                             std::to_string(kMaxSafetensorsHeaderBytes) + " bytes): not a safetensors file or corrupt",
                         where);
  if (n > file_size - 8)
    throw ModelLoadError("file is truncated: header length " + std::to_string(n) + " but only " +
                             std::to_string(file_size - 8) + " bytes follow it",
                         where);
  const size_t bad = find_invalid_utf8(bytes + 8, n);
  if (bad != std::string::npos)
    throw ModelLoadError("header is not valid UTF-8 (byte " + std::to_string(bad) + " of the header)", where);
  nlohmann::json header = parse_header(std::string(reinterpret_cast<const char*>(bytes + 8), n), path);

  data_start_ = 8 + n;
  const uint64_t data_size = file_size - data_start_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw ModelLoadError("__metadata__ must be an object of strings", where);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw ModelLoadError("__metadata__ value '" + m.key() + "' is " + m.value().type_name() + ", not a string",
                               where);
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto fail = [&](const std::string& what) -> ModelLoadError {
      return ModelLoadError("tensor '" + name + "': " + what, where);
    };
    if (!v.is_object()) throw fail("entry must be an object with dtype, shape and data_offsets");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) throw fail(std::string("entry lacks '") + key + "'");
    if (!v["dtype"].is_string()) throw fail("dtype must be a string");
    const std::string dtype = v["dtype"].get<std::string>();
    const DtypeInfo* d = dtype_by_name(dtype);
    if (!d) throw fail("unknown or unsupported dtype '" + dtype + "' (supported: " + supported_dtypes() + ")");

    SafetensorsEntry e;
    e.dtype = d->type;
    if (!v["shape"].is_array()) throw fail("shape must be an array of non-negative integers");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : v["shape"]) {
      bool ok = false;
      uint64_t x = json_u64(dim, ok);
      if (!ok || x > static_cast<uint64_t>(INT64_MAX))
        throw fail("shape " + v["shape"].dump() + " must hold non-negative integers");
      e.shape.push_back(static_cast<int64_t>(x));
      overflow = overflow || __builtin_mul_overflow(numel, x, &numel);
    }
    const auto& offs = v["data_offsets"];
    bool ok_b = false, ok_e = false;
    if (!offs.is_array() || offs.size() != 2) throw fail("data_offsets must be [begin, end]");
    e.begin = json_u64(offs[0], ok_b);
    e.end = json_u64(offs[1], ok_e);
    if (!ok_b || !ok_e) throw fail("data_offsets " + offs.dump() + " must be non-negative integers");
    if (e.end < e.begin) throw fail("data_offsets " + offs.dump() + " end before they begin");
    if (e.end > data_size)
      throw fail("data_offsets " + offs.dump() + " reach past the end of the data (" + std::to_string(data_size) +
                 " bytes): file truncated or corrupt");
    uint64_t nbytes = 0;
    const bool too_big = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(d->itemsize), &nbytes);
    if (too_big || nbytes != e.end - e.begin)
      throw fail("shape " + v["shape"].dump() + " of " + dtype + " needs " +
                 (too_big ? std::string("more than 2^64") : std::to_string(nbytes)) + " bytes but data_offsets " +
                 offs.dump() + " hold " + std::to_string(e.end - e.begin));
    entries_.emplace(name, std::move(e));
  }

  // Overlap check: sort the non-empty ranges by start; each must begin at or after the previous end.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> ranges;
  for (const auto& [name, e] : entries_)
    if (e.end > e.begin) ranges.emplace_back(&name, &e);
  std::sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].second->begin < ranges[i - 1].second->end)
      throw ModelLoadError("tensor '" + *ranges[i].first + "': data_offsets overlap those of tensor '" +
                               *ranges[i - 1].first + "'",
                           where);
  mapping_ = std::move(mapping);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw ModelLoadError("tensor '" + name + "' is not in the file (" + std::to_string(entries_.size()) + " tensors)",
                         {path_}, {}, did_you_mean(name, names()));
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const auto opts = at::TensorOptions().dtype(e.dtype).device(at::kCPU);
  const size_t nbytes = e.end - e.begin;
  if (nbytes == 0) return at::empty(e.shape, opts);
  auto* ptr = static_cast<unsigned char*>(mapping_->addr) + data_start_ + e.begin;
  if (e.dtype == at::kBool) {
    // Bytes other than 0/1 are undefined behaviour for torch's bool kernels.
    for (size_t i = 0; i < nbytes; ++i)
      if (ptr[i] > 1)
        throw ModelLoadError("tensor '" + name + "': BOOL byte " + std::to_string(i) + " is " +
                                 std::to_string(ptr[i]) + ", not 0 or 1",
                             {path_});
  }
  const size_t itemsize = at::elementSize(e.dtype);
  if (reinterpret_cast<uintptr_t>(ptr) % itemsize != 0) {
    // Misaligned data (the writer did not pad): kernels may assume alignment, so copy.
    at::Tensor t = at::empty(e.shape, opts);
    std::memcpy(t.data_ptr(), ptr, nbytes);
    return t;
  }
  std::shared_ptr<Mapping> keep = mapping_;
  return at::from_blob(ptr, e.shape, [keep](void*) mutable { keep.reset(); }, opts);
}

void SafetensorsFile::release(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t from = reinterpret_cast<uintptr_t>(mapping_->addr) + data_start_ + e.begin;
  const uintptr_t to = reinterpret_cast<uintptr_t>(mapping_->addr) + data_start_ + e.end;
  const uintptr_t first = (from + page - 1) / page * page, last = to / page * page;  // whole pages only
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// ---------------------------------------------------------------- writer

void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& body) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) throw OutputError("output path '" + path + "' names a directory, not a file");
  std::string tmp = dir + "." + base + ".tmp.XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) throw OutputError("cannot create a temp file in the directory of " + path + ": " + errno_text(), {path});
  struct Guard {
    int fd;
    std::string tmp;
    bool committed = false;
    ~Guard() {
      if (fd >= 0) ::close(fd);
      if (!committed) ::unlink(tmp.c_str());
    }
  } guard{fd, tmp};

  const ByteSink sink = [&](const void* data, size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t w = ::write(guard.fd, p, size);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw OutputError("cannot write " + path + ": " + errno_text(), {path});
      p += w;
      size -= static_cast<size_t>(w);
    }
  };
  body(sink);
  // mkstemp creates 0600; an output file should be readable like any other.
  if (fchmod(guard.fd, 0644) != 0 || fsync(guard.fd) != 0)
    throw OutputError("cannot write " + path + ": " + errno_text(), {path});
  int fd_to_close = guard.fd;
  guard.fd = -1;
  if (::close(fd_to_close) != 0) throw OutputError("cannot write " + path + ": " + errno_text(), {path});
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw OutputError("cannot move the temp file over " + path + ": " + errno_text(), {path});
  guard.committed = true;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    at::Tensor t;
    const DtypeInfo* d;
  };
  std::vector<Item> items;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw OutputError("'" + name + "' cannot be a tensor name in safetensors", {path});
    if (!t.defined()) throw OutputError("tensor '" + name + "' is undefined", {path});
    const DtypeInfo* d = dtype_by_type(t.scalar_type());
    if (!d)
      throw OutputError("tensor '" + name + "' has dtype " + c10::toString(t.scalar_type()) +
                            ", which safetensors cannot store",
                        {path}, {}, "supported: " + supported_dtypes());
    at::Tensor c;
    try {
      c = t.to(at::kCPU).contiguous();
    } catch (const std::exception& e) {
      throw OutputError("tensor '" + name + "' cannot be copied to the CPU: " + e.what(), {path});
    }
    items.push_back({&name, std::move(c), d});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.d->rank != b.d->rank ? a.d->rank > b.d->rank : *a.name < *b.name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    const uint64_t nbytes = it.t.nbytes();
    header[*it.name] = {{"dtype", it.d->name}, {"shape", it.t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // metadata or a name that is not UTF-8
    throw OutputError(std::string("cannot encode the safetensors header: ") + e.what(), {path});
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as in the reference writer

  write_file_atomically(path, [&](const ByteSink& sink) {
    const uint64_t n = text.size();
    sink(&n, 8);
    sink(text.data(), text.size());
    for (const auto& it : items)
      if (it.t.nbytes() > 0) sink(it.t.data_ptr(), it.t.nbytes());
  });
}

}  // namespace tessera
