#include "models/loading/torch_checkpoint.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <unordered_map>
#include <vector>

#include "tessera/error.h"

// Storage records hold the saving machine's byte order; torch >= 2.1 says which in a "byteorder" record.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "torch checkpoint reading assumes a little-endian host");

namespace tessera {

namespace {

namespace fs = std::filesystem;

// ---- Pickle values ----------------------------------------------------------------------------------------------

/// Opaque: an inert placeholder for a global outside the allow-list, or for whatever the pickle builds from one
/// (a call, an instance, a tensor whose storage is one); it records only that global's "module.name".
enum class Kind { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Opaque };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::BigInt: return "int (beyond 64 bits)";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes object";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
    case Kind::Opaque: return "opaque object";
  }
  return "?";
}

/// "a dict", "an int", "None".
std::string a_kind(Kind k) {
  std::string n = kind_name(k);
  if (k == Kind::None) return n;
  return (std::strchr("aeiou", n[0]) ? "an " : "a ") + n;
}

/// What an allowed global does when the pickle calls it (REDUCE) or uses it as a storage type (BINPERSID).
enum class Callable { OrderedDict, RebuildTensor, RebuildParameter, StorageType };

struct Value;
using Ref = std::shared_ptr<Value>;

struct Value {
  explicit Value(Kind k) : kind(k) {}
  Kind kind;
  int64_t i = 0;                              ///< Bool, Int
  double f = 0;                               ///< Float
  std::string s;                              ///< Str, Bytes; Global, Opaque: "module.name"
  std::vector<Ref> items;                     ///< Tuple, List
  std::vector<std::pair<Ref, Ref>> entries;   ///< Dict, in insertion order; a repeated key: the last one wins
  Callable callable = Callable::OrderedDict;  ///< Global
  at::ScalarType dtype = at::kFloat;          ///< Global of a storage type, Storage
  at::Tensor tensor;                          ///< Storage (flat, 1-D, the whole record), Tensor
};

struct StorageType {
  const char* name;
  at::ScalarType dtype;
};
const StorageType kStorageTypes[] = {
    {"DoubleStorage", at::kDouble},        {"FloatStorage", at::kFloat},
    {"HalfStorage", at::kHalf},            {"BFloat16Storage", at::kBFloat16},
    {"LongStorage", at::kLong},            {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort},          {"CharStorage", at::kChar},
    {"ByteStorage", at::kByte},            {"BoolStorage", at::kBool},
    {"ComplexFloatStorage", at::kComplexFloat}, {"ComplexDoubleStorage", at::kComplexDouble},
};

/// `s` for a message: control bytes as \xNN (names come from an untrusted file).
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string convert_hint(const std::string& path) {
  std::string stem = fs::path(path).stem().string();
  return "convert it to safetensors once with Python, only if you trust the file (this runs its pickle): python3 -c "
         "\"import torch; from safetensors.torch import save_file; sd = torch.load('" +
         path + "', map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd); save_file({k: "
         "v.contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}, '" +
         stem + ".safetensors')\"";
}

/// Reads one storage record ("data/<key>") as a flat tensor of `numel` elements.
using StorageLoader = std::function<at::Tensor(at::ScalarType dtype, const std::string& key, int64_t numel)>;

// ---- The restricted unpickler -----------------------------------------------------------------------------------

/// A pickle virtual machine for protocols 2-5 without any code execution: globals resolve only to the few
/// callables above; every other one becomes an Opaque placeholder that is never called, imported or constructed.
/// REDUCE, NEWOBJ(_EX) and BUILD on a placeholder, and an allowed callable given one as an argument, yield another
/// placeholder; items APPENDed or SET on one are dropped. Whether a placeholder is an error is decided by
/// tensor_map(), which sees where it ended up. Every read is bounds-checked and the stack cannot underflow a MARK,
/// so malformed input is an error.
class RestrictedUnpickler {
 public:
  RestrictedUnpickler(std::string path, const char* data, size_t size, StorageLoader load_storage)
      : path_(std::move(path)), data_(data), size_(size), load_storage_(std::move(load_storage)) {}
  RestrictedUnpickler(const RestrictedUnpickler&) = delete;
  RestrictedUnpickler& operator=(const RestrictedUnpickler&) = delete;
  // A pickle can build reference cycles through its memo (a list holding itself); emptying every container
  // breaks them. The caller has taken what it needs (tensor handles) by then.
  ~RestrictedUnpickler() {
    for (auto& c : containers_) {
      c->items.clear();
      c->entries.clear();
    }
  }

  Ref load() {
    while (true) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      if (op == '.') break;  // STOP
      step(op);
    }
    if (stack_.size() != 1 || !marks_.empty())
      fail("the pickle ends with " + std::to_string(stack_.size()) + " values on its stack, expected 1");
    return stack_.back();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw ModelLoadError("malformed pickle (data.pkl, byte " + std::to_string(op_pos_) + "): " + what,
                         SourceLoc{path_});
  }

  // -- input
  void need(uint64_t n) const {
    if (n > size_ - pos_) fail("the pickle is truncated");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  template <typename T>
  T little() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) fail("unterminated text argument");
    size_t n = static_cast<const char*>(nl) - (data_ + pos_);
    std::string s(data_ + pos_, n);
    pos_ += n + 1;
    return s;
  }

  // -- stack
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  Ref pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Ref& top() {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  void push(Ref v) { stack_.push_back(std::move(v)); }
  Ref make(Kind k) {
    auto v = std::make_shared<Value>(k);
    if (k == Kind::List || k == Kind::Dict || k == Kind::Tuple) containers_.push_back(v);
    return v;
  }
  Ref make_int(int64_t i) {
    auto v = make(Kind::Int);
    v->i = i;
    return v;
  }
  Ref make_str(Kind k, std::string s) {
    auto v = make(k);
    v->s = std::move(s);
    return v;
  }
  Ref make_opaque(const std::string& global) { return make_str(Kind::Opaque, global); }
  Ref expect(Ref v, Kind k, const char* what) {
    if (v->kind != k)
      fail(std::string(what) + " is " + a_kind(v->kind) +
           (v->kind == Kind::Opaque ? " (of the global '" + printable(v->s) + "')" : std::string()) +
           ", expected " + a_kind(k));
    return v;
  }
  void add_pairs(Value& dict, std::vector<Ref>& items) {
    if (items.size() % 2) fail("odd number of values for dict keys and values");
    for (size_t k = 0; k < items.size(); k += 2) dict.entries.emplace_back(items[k], items[k + 1]);
  }

  // -- one opcode
  void step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t proto = u8();
        if (proto < 2 || proto > 5) fail("pickle protocol " + std::to_string(proto) + " (expected 2-5)");
      } break;
      case 0x95: little<uint64_t>(); break;  // FRAME: a read-ahead hint
      case '(': marks_.push_back(stack_.size()); break;
      case '0':  // POP (of a MARK when nothing is above it, as in Python)
        if (!marks_.empty() && stack_.size() == marks_.back()) marks_.pop_back();
        else pop();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case 'N': push(make(Kind::None)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        auto v = make(Kind::Bool);
        v->i = op == 0x88;
        push(v);
      } break;
      case 'J': push(make_int(little<int32_t>())); break;   // BININT
      case 'K': push(make_int(u8())); break;                // BININT1
      case 'M': push(make_int(little<uint16_t>())); break;  // BININT2
      case 0x8a: push_long(u8()); break;                    // LONG1
      case 0x8b: {                                          // LONG4
        int32_t n = little<int32_t>();
        if (n < 0) fail("negative LONG4 length");
        push_long(static_cast<uint64_t>(n));
      } break;
      case 'G': {  // BINFLOAT, big-endian
        uint64_t bits = __builtin_bswap64(little<uint64_t>());
        auto v = make(Kind::Float);
        std::memcpy(&v->f, &bits, sizeof(double));
        push(v);
      } break;
      case 'X': push(make_str(Kind::Str, bytes(little<uint32_t>()))); break;   // BINUNICODE
      case 0x8c: push(make_str(Kind::Str, bytes(u8()))); break;                // SHORT_BINUNICODE
      case 0x8d: push(make_str(Kind::Str, bytes(little<uint64_t>()))); break;  // BINUNICODE8
      case 'T': {                                                             // BINSTRING (Python 2 str)
        int32_t n = little<int32_t>();
        if (n < 0) fail("negative BINSTRING length");
        push(make_str(Kind::Str, bytes(static_cast<uint64_t>(n))));
      } break;
      case 'U': push(make_str(Kind::Str, bytes(u8()))); break;                   // SHORT_BINSTRING
      case 'B': push(make_str(Kind::Bytes, bytes(little<uint32_t>()))); break;   // BINBYTES
      case 'C': push(make_str(Kind::Bytes, bytes(u8()))); break;                 // SHORT_BINBYTES
      case 0x8e: push(make_str(Kind::Bytes, bytes(little<uint64_t>()))); break;  // BINBYTES8
      case ']': push(make(Kind::List)); break;                                   // EMPTY_LIST
      case ')': push(make(Kind::Tuple)); break;                                  // EMPTY_TUPLE
      case '}': push(make(Kind::Dict)); break;                                   // EMPTY_DICT
      case 'l':
      case 't': {  // LIST, TUPLE
        auto items = pop_mark();
        auto v = make(op == 'l' ? Kind::List : Kind::Tuple);
        v->items = std::move(items);
        push(v);
      } break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        size_t n = op - 0x84;
        if (stack_.size() < base() + n) fail("stack underflow");
        auto v = make(Kind::Tuple);
        v->items.assign(std::make_move_iterator(stack_.end() - n), std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        push(v);
      } break;
      case 'd': {  // DICT
        auto items = pop_mark();
        auto v = make(Kind::Dict);
        add_pairs(*v, items);
        push(v);
      } break;
      // APPEND(S) and SETITEM(S) on a placeholder (a list or dict subclass, such as Lightning's AttributeDict):
      // Python would call its append/extend/__setitem__; the items are dropped instead.
      case 'a': {  // APPEND
        Ref item = pop();
        if (top()->kind == Kind::Opaque) break;
        expect(top(), Kind::List, "APPEND's target")->items.push_back(std::move(item));
      } break;
      case 'e': {  // APPENDS
        auto items = pop_mark();
        if (top()->kind == Kind::Opaque) break;
        auto& list = expect(top(), Kind::List, "APPENDS' target")->items;
        list.insert(list.end(), std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
      } break;
      case 's': {  // SETITEM
        Ref value = pop();
        Ref key = pop();
        if (top()->kind == Kind::Opaque) break;
        expect(top(), Kind::Dict, "SETITEM's target")->entries.emplace_back(std::move(key), std::move(value));
      } break;
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) fail("odd number of values for dict keys and values");
        if (top()->kind == Kind::Opaque) break;
        add_pairs(*expect(top(), Kind::Dict, "SETITEMS' target"), items);
      } break;
      case 'q': memo_[u8()] = top(); break;                 // BINPUT
      case 'r': memo_[little<uint32_t>()] = top(); break;   // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); break;        // MEMOIZE
      case 'h': push(memo_get(u8())); break;                // BINGET
      case 'j': push(memo_get(little<uint32_t>())); break;  // LONG_BINGET
      case 'c': {                                           // GLOBAL
        std::string module = line();
        std::string name = line();
        push(resolve_global(module, name));
      } break;
      case 0x93: {  // STACK_GLOBAL
        Ref name = expect(pop(), Kind::Str, "STACK_GLOBAL's name");
        Ref module = expect(pop(), Kind::Str, "STACK_GLOBAL's module");
        push(resolve_global(module->s, name->s));
      } break;
      case 'R': {  // REDUCE
        Ref args = pop();
        Ref fn = pop();
        push(call(*fn, *args));
      } break;
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        Ref args = pop();
        Ref cls = pop();
        push(instantiate(*cls, *args, nullptr));
      } break;
      case 0x92: {  // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
        Ref kwargs = pop();
        Ref args = pop();
        Ref cls = pop();
        push(instantiate(*cls, *args, kwargs.get()));
      } break;
      // BUILD: the object's __setstate__ data (a state dict's _metadata, a placeholder instance's attributes); not
      // needed, dropped. The object stays what it was: a placeholder stays an inert placeholder.
      case 'b':
        pop();
        top();
        break;
      case 'Q': push(persistent_load(*pop())); break;  // BINPERSID
      default: {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "unsupported opcode 0x%02x", op);
        fail(std::string(buf) + (op >= 0x20 && op < 0x7f ? std::string(" ('") + char(op) + "')" : std::string()) +
             " (this reader knows the binary opcodes of pickle protocols 2-5, which torch.save writes)");
      }
    }
  }

  Ref memo_get(uint64_t id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) fail("memo entry " + std::to_string(id) + " was never stored");
    return it->second;
  }

  // Little-endian two's complement of n bytes; over 8 bytes it is kept as an opaque "big int".
  void push_long(uint64_t n) {
    std::string b = bytes(n);
    if (n > 8) {
      push(make(Kind::BigInt));
      return;
    }
    uint64_t u = 0;
    for (size_t k = 0; k < n; ++k) u |= uint64_t(static_cast<uint8_t>(b[k])) << (8 * k);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
    push(make_int(static_cast<int64_t>(u)));
  }

  /// A global outside this list becomes a placeholder: nothing is imported, so nothing of it can run.
  Ref resolve_global(const std::string& module, const std::string& name) {
    auto global = [&](Callable c, at::ScalarType dtype = at::kFloat) {
      auto v = make_str(Kind::Global, module + "." + name);
      v->callable = c;
      v->dtype = dtype;
      return v;
    };
    if (module == "collections" && name == "OrderedDict") return global(Callable::OrderedDict);
    if (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_tensor"))
      return global(Callable::RebuildTensor);
    if (module == "torch._utils" && name == "_rebuild_parameter") return global(Callable::RebuildParameter);
    if (module == "torch")
      for (const auto& st : kStorageTypes)
        if (name == st.name) return global(Callable::StorageType, st.dtype);
    return make_opaque(module + "." + name);
  }

  /// The first placeholder among `args` or their direct items (a size tuple, OrderedDict's pairs), or null.
  static const Value* opaque_among(const std::vector<Ref>& args) {
    for (const auto& v : args) {
      if (v->kind == Kind::Opaque) return v.get();
      if (v->kind == Kind::Tuple || v->kind == Kind::List)
        for (const auto& e : v->items)
          if (e->kind == Kind::Opaque) return e.get();
    }
    return nullptr;
  }

  Ref call(const Value& fn, const Value& args) {
    if (args.kind != Kind::Tuple) fail("REDUCE's arguments are " + a_kind(args.kind) + ", not a tuple");
    if (fn.kind == Kind::Opaque) return make_opaque(fn.s);  // a foreign function or class: not called
    if (fn.kind != Kind::Global) fail("REDUCE calls " + a_kind(fn.kind) + ", not a global");
    const auto& a = args.items;
    // An allowed callable given a placeholder where it needs a real value (a tensor whose storage is foreign)
    // cannot be built: its result is a placeholder for that global too.
    if (fn.callable != Callable::StorageType)
      if (const Value* foreign = opaque_among(a)) return make_opaque(foreign->s);
    switch (fn.callable) {
      case Callable::OrderedDict: {
        auto d = make(Kind::Dict);
        if (a.size() == 1 && (a[0]->kind == Kind::List || a[0]->kind == Kind::Tuple)) {  // OrderedDict(pairs)
          for (const auto& pair : a[0]->items) {
            if ((pair->kind != Kind::Tuple && pair->kind != Kind::List) || pair->items.size() != 2)
              fail("OrderedDict's items must be (key, value) pairs");
            d->entries.emplace_back(pair->items[0], pair->items[1]);
          }
        } else if (!a.empty()) {
          fail("OrderedDict called with " + std::to_string(a.size()) + " arguments");
        }
        return d;
      }
      case Callable::RebuildTensor: return rebuild_tensor(a);
      case Callable::RebuildParameter: {
        if (a.empty() || a[0]->kind != Kind::Tensor) fail(fn.s + " expects a tensor as its first argument");
        return a[0];
      }
      case Callable::StorageType: break;
    }
    fail(fn.s + " is not callable");
  }

  // NEWOBJ / NEWOBJ_EX: only a placeholder class is "instantiated", into a placeholder; none of the allowed
  // globals is pickled this way.
  Ref instantiate(const Value& cls, const Value& args, const Value* kwargs) {
    if (args.kind != Kind::Tuple) fail("NEWOBJ's arguments are " + a_kind(args.kind) + ", not a tuple");
    if (kwargs && kwargs->kind != Kind::Dict)
      fail("NEWOBJ_EX's keyword arguments are " + a_kind(kwargs->kind) + ", not a dict");
    if (cls.kind == Kind::Opaque) return make_opaque(cls.s);
    if (cls.kind == Kind::Global) fail("NEWOBJ of " + cls.s + ", which is not pickled that way");
    fail("NEWOBJ's class is " + a_kind(cls.kind) + ", not a global");
  }

  std::vector<int64_t> int_list(const Value& v, const char* what) {
    if (v.kind != Kind::Tuple && v.kind != Kind::List) fail(std::string(what) + " is " + a_kind(v.kind));
    std::vector<int64_t> out;
    for (const auto& e : v.items) {
      if (e->kind != Kind::Int || e->i < 0) fail(std::string(what) + " holds something other than a size");
      out.push_back(e->i);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  Ref rebuild_tensor(const std::vector<Ref>& a) {
    if (a.size() < 4) fail("_rebuild_tensor needs at least 4 arguments, got " + std::to_string(a.size()));
    const Value& storage = *expect(a[0], Kind::Storage, "a tensor's storage");
    const Value& offset = *expect(a[1], Kind::Int, "a tensor's storage offset");
    std::vector<int64_t> size = int_list(*a[2], "a tensor's size");
    std::vector<int64_t> stride = int_list(*a[3], "a tensor's stride");
    if (size.size() != stride.size()) fail("a tensor's size and stride differ in length");
    if (offset.i < 0) fail("negative storage offset");
    // The highest element index the view touches must lie in the storage (128-bit: sizes are untrusted).
    unsigned __int128 numel = 1, last = static_cast<uint64_t>(offset.i);
    for (size_t d = 0; d < size.size(); ++d) {
      numel *= static_cast<uint64_t>(size[d]);
      if (size[d] > 0) last += static_cast<unsigned __int128>(size[d] - 1) * static_cast<uint64_t>(stride[d]);
      if (numel > (unsigned __int128)1 << 62 || last > (unsigned __int128)1 << 62) fail("a tensor's size overflows");
    }
    const int64_t available = storage.tensor.numel();
    if (numel > 0 && last >= static_cast<unsigned __int128>(available))
      fail("a tensor view reaches element " + std::to_string(static_cast<uint64_t>(last)) + " of a storage of " +
           std::to_string(available));
    at::Tensor t = numel == 0 ? at::empty(size, storage.tensor.options())
                              : storage.tensor.as_strided(size, stride, offset.i);
    if (!t.is_contiguous()) t = t.contiguous();
    auto v = make(Kind::Tensor);
    v->tensor = t;
    return v;
  }

  // ('storage', <torch.*Storage>, key, location, numel): a storage record, read once per key.
  Ref persistent_load(const Value& pid) {
    if (pid.kind != Kind::Tuple || pid.items.size() < 5 || pid.items[0]->kind != Kind::Str ||
        pid.items[0]->s != "storage")
      fail("a persistent id that is not ('storage', type, key, location, size)");
    const auto& it = pid.items;
    // A storage of a foreign type (torch.QUInt8Storage, …): a placeholder, its record is not even read.
    if (it[1]->kind == Kind::Opaque) return make_opaque(it[1]->s);
    if (it[1]->kind != Kind::Global || it[1]->callable != Callable::StorageType)
      fail("a storage's type is " + a_kind(it[1]->kind) + ", not a torch.*Storage");
    const std::string key = expect(it[2], Kind::Str, "a storage key")->s;
    expect(it[3], Kind::Str, "a storage location");  // any device: everything is read to the CPU
    const int64_t numel = expect(it[4], Kind::Int, "a storage size")->i;
    const at::ScalarType dtype = it[1]->dtype;
    auto found = storages_.find(key);
    if (found != storages_.end()) {
      if (found->second->dtype != dtype) fail("storage '" + printable(key) + "' is used with two dtypes");
      return found->second;
    }
    if (numel < 0) fail("storage '" + printable(key) + "' has a negative size");
    auto v = make(Kind::Storage);
    v->dtype = dtype;
    v->tensor = load_storage_(dtype, key, numel);
    storages_[key] = v;
    return v;
  }

  std::string path_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0, op_pos_ = 0;
  StorageLoader load_storage_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Ref> memo_;
  std::unordered_map<std::string, Ref> storages_;
  std::vector<Ref> containers_;
};

// ---- The state dict in the unpickled value ------------------------------------------------------------------------

std::string key_text(const Value& k) {
  if (k.kind == Kind::Int) return std::to_string(k.i);
  return a_kind(k.kind);
}

/// A placeholder where a tensor (or the file's dict) must be: the global it stands for, refused.
[[noreturn]] void refuse_foreign(const std::string& what, const Value& placeholder, const std::string& path) {
  throw ModelLoadError("refusing " + what + ": it needs the Python global '" + printable(placeholder.s) +
                           "', which this reader does not run (only tensors, storages, OrderedDict and plain values "
                           "are read, since unpickling any other global can run arbitrary Python code)",
                       SourceLoc{path}, {}, convert_hint(path));
}

/// The returned state dict: the top-level dict, or its "state_dict" entry when that is a dict (Lightning's layout;
/// the other entries are ignored, placeholders in them included). Every placeholder inside it is refused.
std::map<std::string, at::Tensor> tensor_map(const Value& root, const std::string& path) {
  SourceLoc where{path};
  if (root.kind == Kind::Opaque)
    refuse_foreign("the checkpoint, which holds an object, not a dict of tensors", root, path);
  if (root.kind != Kind::Dict)
    throw ModelLoadError("the checkpoint holds " + a_kind(root.kind) + ", not a dict of tensors", where);
  const Value* sd = &root;
  const Value* wrapped = nullptr;  // the last "state_dict" entry, as in a Python dict
  for (const auto& [k, v] : root.entries)
    if (k->kind == Kind::Str && k->s == "state_dict") wrapped = v.get();
  if (wrapped && wrapped->kind == Kind::Dict) sd = wrapped;
  if (wrapped && wrapped->kind == Kind::Opaque) refuse_foreign("the checkpoint's 'state_dict'", *wrapped, path);
  const std::string in = sd == &root ? "the checkpoint" : "the checkpoint's 'state_dict'";
  std::map<std::string, at::Tensor> out;
  for (const auto& [k, v] : sd->entries) {
    if (k->kind == Kind::Opaque) refuse_foreign("a key of " + in, *k, path);
    if (k->kind != Kind::Str)
      throw ModelLoadError("a key of " + in + " is " + key_text(*k) + ", not a string (tensor names are strings)",
                           where);
    if (v->kind == Kind::Opaque) refuse_foreign("entry '" + printable(k->s) + "' of " + in, *v, path);
    if (v->kind != Kind::Tensor)
      throw ModelLoadError("entry '" + printable(k->s) + "' of " + in + " is " + a_kind(v->kind) + ", not a tensor",
                           where, {},
                           sd == &root ? "a Lightning checkpoint keeps its tensors under a 'state_dict' entry; this "
                                         "file has none"
                                       : "");
    out[k->s] = v->tensor;
  }
  return out;
}

}  // namespace

bool is_torch_zip_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char head[4];
  return f && f.read(head, 4) && std::memcmp(head, "PK\x03\x04", 4) == 0;
}

std::map<std::string, at::Tensor> read_torch_checkpoint(const std::string& path) {
  const SourceLoc where{path};
  std::error_code ec;
  if (!fs::exists(path, ec)) throw ModelLoadError("checkpoint file not found", where);
  if (!fs::is_regular_file(path, ec)) throw ModelLoadError("not a regular file", where);
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ModelLoadError(std::string("cannot open checkpoint: ") + std::strerror(errno), where);
    char head[4] = {};
    f.read(head, 4);
    if (f.gcount() < 4 || std::memcmp(head, "PK\x03\x04", 4) != 0) {
      if (f.gcount() >= 1 && static_cast<uint8_t>(head[0]) == 0x80)
        throw ModelLoadError(
            "a legacy torch.save file (torch < 1.6, a bare pickle rather than a zip), which Tessera does not read",
            where, {}, convert_hint(path));
      throw ModelLoadError("not a PyTorch zip checkpoint (no zip signature at the start)", where, {},
                           "Tessera reads .ckpt/.pt files written by torch.save with torch >= 1.6, and .safetensors");
    }
  }
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (!reader.hasRecord("data.pkl")) {
      std::string records;
      size_t n = 0;
      bool torchscript = false;
      for (const auto& r : reader.getAllRecords()) {
        torchscript |= r.rfind("code/", 0) == 0 || r == "constants.pkl";
        if (n++ < 8) records += (records.empty() ? "" : ", ") + printable(r);
      }
      throw ModelLoadError("the zip has no data.pkl record (" + std::to_string(n) + " records: " + records +
                               (n > 8 ? ", …" : "") + ")" +
                               (torchscript ? "; it looks like a TorchScript module (torch.jit.save)" : ""),
                           where);
    }
    if (reader.hasRecord("byteorder")) {
      auto [ptr, size] = reader.getRecord("byteorder");
      std::string order(static_cast<const char*>(ptr.get()), size);
      if (order != "little")
        throw ModelLoadError("the tensors are stored in byte order '" + printable(order) + "', not little-endian",
                             where);
    }
    auto [pickle, pickle_size] = reader.getRecord("data.pkl");
    StorageLoader load_storage = [&](at::ScalarType dtype, const std::string& key, int64_t numel) -> at::Tensor {
      const auto options = at::TensorOptions().dtype(dtype);
      if (numel == 0) return at::empty({0}, options);
      const size_t itemsize = c10::elementSize(dtype);
      if (static_cast<uint64_t>(numel) > std::numeric_limits<int64_t>::max() / itemsize)
        throw ModelLoadError("storage '" + printable(key) + "' has an impossible size", where);
      const size_t nbytes = static_cast<size_t>(numel) * itemsize;
      const std::string record = "data/" + key;
      if (!reader.hasRecord(record))
        throw ModelLoadError("the storage record '" + printable(record) + "' is missing", where);
      auto [data, size] = reader.getRecord(record);
      if (size < nbytes)
        throw ModelLoadError("the storage record '" + printable(record) + "' has " + std::to_string(size) +
                                 " bytes, the pickle needs " + std::to_string(nbytes),
                             where);
      c10::Storage storage(c10::Storage::use_byte_size_t(), static_cast<int64_t>(nbytes), std::move(data),
                           /*allocator=*/nullptr, /*resizable=*/false);
      return at::empty({0}, options).set_(storage);
    };
    RestrictedUnpickler unpickler(path, static_cast<const char*>(pickle.get()), pickle_size, load_storage);
    return tensor_map(*unpickler.load(), path);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw ModelLoadError("cannot read the checkpoint (truncated or corrupt file?): " +
                             first_line(e.what_without_backtrace()),
                         where);
  } catch (const std::exception& e) {
    throw ModelLoadError(std::string("cannot read the checkpoint: ") + e.what(), where);
  }
}

}  // namespace tessera
