// PyTorch zip checkpoints (.ckpt/.pt) read by the restricted unpickler: the tiny SD2 checkpoint against its
// safetensors twin, the small fixtures of tests/fixtures/ckpt (see its README), and zips written here with
// hand-made pickles for what torch.save never writes (views past their storage, reference cycles, bad opcodes).
// LibTorch first, then glog's CHECK (which it brings in) undefined, so Catch's CHECK is the one in force whether or
// not the build prepends a precompiled <torch/torch.h>.
#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>
#undef CHECK
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <tuple>

#include "tessera/error.h"
#include "models/loading/state_dict.h"
#include "models/loading/torch_checkpoint.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

const std::string kSingleFile = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/parity/models/single_file";
const std::string kTinyCkpt = kSingleFile + "/tiny-sd2-v-state_dict.ckpt";
const std::string kTinySafetensors = kSingleFile + "/tiny-sd2-v.safetensors";
const std::string kFixtures = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/ckpt/";

// A fresh temp folder, removed at scope end.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::mt19937_64 rng(std::random_device{}());
    dir = fs::temp_directory_path() / ("tessera_ckpt_" + std::to_string(rng()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The ModelLoadError's what() for reading `path`, after checking the error points at the file.
std::string load_error(const std::string& path) {
  try {
    read_torch_checkpoint(path);
  } catch (const ModelLoadError& e) {
    CHECK(e.where().file == path);
    return e.what();
  }
  FAIL("no ModelLoadError for " << path);
  return "";
}

// Pickle opcodes by hand, for zips torch.save would never write.
struct Pickle {
  std::string b;
  explicit Pickle(int protocol = 2) { b = std::string("\x80") + char(protocol); }
  Pickle& op(char c) {
    b += c;
    return *this;
  }
  Pickle& str(const std::string& s) {
    uint32_t n = static_cast<uint32_t>(s.size());
    b += 'X';
    b.append(reinterpret_cast<const char*>(&n), 4);
    b += s;
    return *this;
  }
  Pickle& int1(uint8_t v) {
    b += 'K';
    b += char(v);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += 'c' + module + '\n' + name + '\n';
    return *this;
  }
  // module.name(arg): REDUCE of a global on a 1-tuple.
  Pickle& call(const std::string& module, const std::string& name, const std::string& arg) {
    return global(module, name).str(arg).op('\x85').op('R');
  }
  // _rebuild_tensor_v2 of a 1-D float32 view [size] at `offset` into storage `key` declared with `storage_numel`.
  Pickle& tensor(uint8_t storage_numel, uint8_t size, uint8_t offset = 0, const std::string& type = "FloatStorage",
                 const std::string& key = "0") {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", type).str(key).str("cpu").int1(storage_numel).op('t').op('Q');
    return view_args(size, offset);
  }
  // The rest of _rebuild_tensor_v2's arguments after its storage, and the call.
  Pickle& view_args(uint8_t size, uint8_t offset = 0) {
    int1(offset).int1(size).op('\x85').int1(1).op('\x85').op('\x89').op('}').op('t').op('R');
    return *this;
  }
  std::string done() const { return b + "."; }
};

// A zip like torch.save's, with `pickle` as data.pkl and storage "0" holding `floats` float32 values 0, 1, 2…
void write_zip(const std::string& path, const std::string& pickle, int floats = 4, bool with_pickle = true) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  if (with_pickle) writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  std::vector<float> data(floats);
  for (int k = 0; k < floats; ++k) data[k] = float(k);
  writer.writeRecord("data/0", data.data(), data.size() * sizeof(float));
  writer.writeEndOfFile();
}

}  // namespace

TEST_CASE("the tiny SD2 .ckpt holds exactly the tensors of its safetensors twin", "[ckpt]") {
  CHECK(is_torch_zip_checkpoint(kTinyCkpt));
  CHECK_FALSE(is_torch_zip_checkpoint(kTinySafetensors));
  auto ckpt = read_torch_checkpoint(kTinyCkpt);  // {"state_dict": {...}, "global_step": 0, "epoch": 0}
  auto expected = read_safetensors_files({kTinySafetensors});
  REQUIRE(ckpt.size() == 505);
  REQUIRE(ckpt.size() == expected.size());
  for (const auto& [name, want] : expected) {
    INFO(name);
    auto it = ckpt.find(name);
    REQUIRE(it != ckpt.end());
    const at::Tensor& got = it->second;
    CHECK(got.scalar_type() == want.scalar_type());
    CHECK(got.sizes() == want.sizes());
    CHECK(got.device().is_cpu());
    CHECK(torch::equal(got, want));
  }
}

TEST_CASE("every dtype and layout of a plain dict reads back with its values", "[ckpt]") {
  auto sd = read_torch_checkpoint(kFixtures + "plain_dtypes.pt");
  CHECK(sd.size() == 15);
  const auto base = torch::arange(12, torch::kFloat32).reshape({3, 4});
  CHECK(torch::equal(sd.at("f32"), base));
  CHECK(torch::equal(sd.at("f32_transposed"), base.t()));
  CHECK(sd.at("f32_transposed").is_contiguous());  // non-contiguous views come back as contiguous copies
  CHECK(torch::equal(sd.at("f32_row"), base[1]));
  CHECK(sd.at("f32_row").data_ptr() == static_cast<float*>(sd.at("f32").data_ptr()) + 4);  // a view
  CHECK(sd.at("f32_tied").data_ptr() == sd.at("f32").data_ptr());
  CHECK(torch::equal(sd.at("f64"), torch::arange(3, torch::kFloat64) / 4));
  CHECK(torch::equal(sd.at("f16"), (torch::arange(4, torch::kFloat32) - 1.5).to(torch::kHalf)));
  CHECK(torch::equal(sd.at("bf16"), (torch::arange(4, torch::kFloat32) * 0.25).to(torch::kBFloat16)));
  CHECK(torch::equal(sd.at("i64"), torch::arange(5, torch::kInt64) - 2));
  CHECK(torch::equal(sd.at("i32"), torch::arange(3, torch::kInt32) * 7));
  CHECK(torch::equal(sd.at("i8"), torch::tensor({-3, 0, 3}, torch::kInt8)));
  CHECK(torch::equal(sd.at("u8"), torch::tensor({0, 128, 255}, torch::kUInt8)));
  CHECK(torch::equal(sd.at("bool"), torch::tensor({true, false, true})));
  CHECK(sd.at("scalar").dim() == 0);
  CHECK(sd.at("scalar").item<float>() == 3.5f);
  CHECK(sd.at("empty").sizes() == c10::IntArrayRef{0, 3});
  CHECK(torch::equal(sd.at("param"), torch::tensor({1.0f, 2.0f})));  // an nn.Parameter: its data
  CHECK_FALSE(sd.at("param").requires_grad());
}

TEST_CASE("a module's state_dict(): OrderedDict with _metadata, zip folder 'archive'", "[ckpt]") {
  auto sd = read_torch_checkpoint(kFixtures + "module_state_dict.pt");
  // state_dict() order; float tensor i holds arange(numel) * 0.5 + i.
  const std::vector<std::string> floats = {"0.weight", "0.bias",         "1.weight",
                                           "1.bias",   "1.running_mean", "1.running_var"};
  CHECK(sd.size() == floats.size() + 1);
  for (size_t i = 0; i < floats.size(); ++i) {
    INFO(floats[i]);
    const at::Tensor& t = sd.at(floats[i]);
    CHECK(torch::equal(t, torch::arange(t.numel(), torch::kFloat32).reshape(t.sizes()) * 0.5 + double(i)));
  }
  CHECK(sd.at("0.weight").sizes() == c10::IntArrayRef{2, 3});
  CHECK(sd.at("1.num_batches_tracked").scalar_type() == torch::kInt64);
  CHECK(sd.at("1.num_batches_tracked").dim() == 0);
  CHECK(sd.at("1.num_batches_tracked").item<int64_t>() == 0);
}

TEST_CASE("Lightning's layout is unwrapped and its training metadata ignored; protocol 4 reads", "[ckpt]") {
  for (const char* name : {"lightning_like.ckpt", "protocol4.pt"}) {
    INFO(name);
    auto sd = read_torch_checkpoint(kFixtures + name);
    REQUIRE(sd.size() == 2);
    CHECK(torch::equal(sd.at("w"), torch::arange(6, torch::kFloat32).reshape({2, 3})));
    CHECK(torch::equal(sd.at("b"), torch::tensor({0.5f, -1.0f})));
  }
}

TEST_CASE("foreign globals beside the state dict are inert placeholders, dropped with the other entries", "[ckpt]") {
  // SD's Lightning layout: "callbacks" keyed by the ModelCheckpoint class, "hyper_parameters" an AttributeDict
  // (NEWOBJ + SETITEMS) holding an argparse.Namespace (NEWOBJ + BUILD); then an instance, a print() call, a numpy
  // scalar and a torch dtype.
  for (const char* name : {"lightning_callbacks.ckpt", "foreign_beside.ckpt"}) {
    INFO(name);
    auto sd = read_torch_checkpoint(kFixtures + name);
    REQUIRE(sd.size() == 2);
    CHECK(torch::equal(sd.at("w"), torch::arange(6, torch::kFloat32).reshape({2, 3})));
    CHECK(torch::equal(sd.at("b"), torch::tensor({0.5f, -1.0f})));
  }

  // Hand-made, beside a one-tensor state dict: a call of posix.system (protocol 4, STACK_GLOBAL), NEWOBJ_EX,
  // APPENDS and SETITEM on placeholders, a placeholder called again, and a tensor of a foreign storage type whose
  // record "missing" is not in the zip (a placeholder storage is never read).
  TempDir t;
  Pickle p(4);
  p.op('}').op('(').str("state_dict").op('}').str("w").tensor(4, 4).op('s');
  p.str("system");
  p.b += "\x8c\x05posix\x8c\x06system\x93";
  p.str("true").op('\x85').op('R');
  p.str("new_ex").global("argparse", "Namespace").op(')').op('}').op('\x92');
  p.str("lst").global("mod", "List").op(')').op('\x81').op('(').int1(1).int1(2).op('e');
  p.str("dct").global("mod", "Dict").op(')').op('\x81').str("k").int1(1).op('s');
  p.str("again").call("builtins", "getattr", "x").str("y").op('\x85').op('R');
  p.str("quantized").tensor(4, 4, 0, "QUInt8Storage", "missing");
  p.op('u');
  write_zip(t.path("beside.pt"), p.done());
  auto sd = read_torch_checkpoint(t.path("beside.pt"));
  REQUIRE(sd.size() == 1);
  CHECK(torch::equal(sd.at("w"), torch::arange(4, torch::kFloat32)));
}

TEST_CASE("a foreign global inside the state dict or as the whole file is refused, naming key and global", "[ckpt]") {
  const std::tuple<const char*, const char*, const char*> cases[] = {
      {"refused_class.ckpt", "entry 'callback' of the checkpoint's 'state_dict'",
       "'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint'"},
      {"refused_function.ckpt", "entry 'hook' of the checkpoint's 'state_dict'", "'__builtin__.print'"},
      {"refused_numpy.ckpt", "entry 'loss' of the checkpoint:", "'numpy.core.multiarray.scalar'"},  // no wrapper
      {"refused_object.pt", "not a dict of tensors", "'argparse.Namespace'"},
  };
  for (const auto& [file, key, global] : cases) {
    const std::string path = kFixtures + file;
    INFO(path);
    CHECK(is_torch_zip_checkpoint(path));
    CHECK_THAT(load_error(path), Catch::Contains(key) && Catch::Contains(global) && Catch::Contains(path) &&
                                     Catch::Contains("refusing") && Catch::Contains("does not run") &&
                                     Catch::Contains("safetensors") && Catch::Contains("save_file"));
  }

  TempDir t;
  auto error_of = [&](const Pickle& p) {
    write_zip(t.path("p.pt"), p.done());
    return load_error(t.path("p.pt"));
  };
  auto in_state_dict = [](const std::function<void(Pickle&)>& value) {
    Pickle p;
    p.op('}').str("state_dict").op('}').str("w").tensor(4, 4).op('s').str("bad");
    value(p);
    p.op('s').op('s');
    return p;
  };
  // A call of posix.system, protocol 4: as a value in the state dict, and as the whole file.
  Pickle p4(4);
  p4.op('}').str("x");
  p4.b += "\x8c\x05posix\x8c\x06system\x93";
  p4.str("true").op('\x85').op('R').op('s');
  CHECK_THAT(error_of(p4), Catch::Contains("entry 'x' of the checkpoint:") && Catch::Contains("'posix.system'"));
  Pickle root(4);
  root.b += "\x8c\x05posix\x8c\x06system\x93";
  root.str("true").op('\x85').op('R');
  CHECK_THAT(error_of(root), Catch::Contains("not a dict of tensors") && Catch::Contains("'posix.system'"));

  // Where the tensor path needs a real value: the storage, a size, _rebuild_parameter's tensor, the storage type.
  const std::string bad = "entry 'bad' of the checkpoint's 'state_dict'";
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) {
               p.global("torch._utils", "_rebuild_tensor_v2").op('(').call("posix", "system", "true").view_args(4);
             })),
             Catch::Contains(bad) && Catch::Contains("'posix.system'"));
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) {
               p.global("torch._utils", "_rebuild_tensor_v2").op('(');
               p.op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").int1(4).op('t').op('Q');
               p.int1(0).call("builtins", "int", "4").op('\x85').int1(1).op('\x85').op('\x89').op('}').op('t');
               p.op('R');
             })),
             Catch::Contains(bad) && Catch::Contains("'builtins.int'"));
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) {
               p.global("torch._utils", "_rebuild_parameter").call("os", "system", "true").op('\x89').op('}');
               p.op('\x87').op('R');
             })),
             Catch::Contains(bad) && Catch::Contains("'os.system'"));
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) { p.tensor(4, 4, 0, "QUInt8Storage"); })),
             Catch::Contains(bad) && Catch::Contains("'torch.QUInt8Storage'"));
  // A class instance (NEWOBJ + BUILD) and a placeholder list (APPEND dropped) as values.
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) {
               p.global("argparse", "Namespace").op(')').op('\x81').op('}').str("lr").int1(1).op('s').op('b');
             })),
             Catch::Contains(bad) && Catch::Contains("'argparse.Namespace'"));
  CHECK_THAT(error_of(in_state_dict([](Pickle& p) { p.global("m", "L").op(')').op('R').int1(1).op('a'); })),
             Catch::Contains(bad) && Catch::Contains("'m.L'"));
  // A placeholder key, and a placeholder as the 'state_dict' entry itself.
  Pickle key;
  key.op('}').call("posix", "system", "true").tensor(4, 4).op('s');
  CHECK_THAT(error_of(key), Catch::Contains("refusing a key of the checkpoint:") && Catch::Contains("'posix.system'"));
  Pickle wrapper;
  wrapper.op('}').str("state_dict").global("addict", "Dict").op(')').op('\x81').str("w").tensor(4, 4).op('s');
  wrapper.op('s');
  CHECK_THAT(error_of(wrapper), Catch::Contains("refusing the checkpoint's 'state_dict':") &&
                                    Catch::Contains("'addict.Dict'") && Catch::Contains("save_file"));
}

TEST_CASE("a state dict holding anything but string keys and tensors is refused, naming the key", "[ckpt]") {
  CHECK_THAT(load_error(kFixtures + "non_tensor_value.ckpt"),
             Catch::Contains("'step'") && Catch::Contains("an int, not a tensor"));
  CHECK_THAT(load_error(kFixtures + "non_string_key.pt"), Catch::Contains("5, not a string"));
  TempDir t;
  write_zip(t.path("list.pt"), Pickle().op(']').done());
  CHECK_THAT(load_error(t.path("list.pt")), Catch::Contains("holds a list, not a dict"));
}

TEST_CASE("missing, non-zip, legacy, truncated and incomplete files are clean ModelLoadErrors", "[ckpt]") {
  TempDir t;
  CHECK_THAT(load_error(t.path("absent.ckpt")), Catch::Contains("not found"));
  CHECK_FALSE(is_torch_zip_checkpoint(t.path("absent.ckpt")));
  CHECK_THAT(load_error(t.dir.string()), Catch::Contains("not a regular file"));
  CHECK_THAT(load_error(kTinySafetensors), Catch::Contains("not a PyTorch zip checkpoint"));
  CHECK_FALSE(is_torch_zip_checkpoint(kFixtures + "legacy.pt"));
  CHECK_THAT(load_error(kFixtures + "legacy.pt"), Catch::Contains("legacy") && Catch::Contains("safetensors"));
  write_file(t.path("empty.ckpt"), "");
  CHECK_THAT(load_error(t.path("empty.ckpt")), Catch::Contains("not a PyTorch zip checkpoint"));

  const std::string bytes = file_bytes(kTinyCkpt);
  for (size_t keep : {size_t(4), size_t(100), bytes.size() / 2, bytes.size() - 22, bytes.size() - 1}) {
    INFO("first " << keep << " of " << bytes.size() << " bytes");
    write_file(t.path("cut.ckpt"), bytes.substr(0, keep));
    CHECK(is_torch_zip_checkpoint(t.path("cut.ckpt")));
    CHECK_THAT(load_error(t.path("cut.ckpt")), Catch::Contains("truncated or corrupt"));
  }

  write_zip(t.path("nopickle.pt"), "", 4, /*with_pickle=*/false);
  CHECK_THAT(load_error(t.path("nopickle.pt")), Catch::Contains("no data.pkl"));
}

TEST_CASE("hand-made pickles: bounds, cycles and malformed streams", "[ckpt]") {
  TempDir t;
  auto error_of = [&](const std::string& pickle, int floats = 4) {
    write_zip(t.path("p.pt"), pickle, floats);
    return load_error(t.path("p.pt"));
  };
  auto dict_of = [](uint8_t storage_numel, uint8_t size, uint8_t offset) {
    return Pickle().op('}').str("w").tensor(storage_numel, size, offset).op('s').done();
  };

  // A well-formed view: storage of 4 floats, 2 elements from offset 2.
  write_zip(t.path("ok.pt"), dict_of(4, 2, 2));
  auto sd = read_torch_checkpoint(t.path("ok.pt"));
  CHECK(torch::equal(sd.at("w"), torch::tensor({2.0f, 3.0f})));

  CHECK_THAT(error_of(dict_of(4, 3, 2)), Catch::Contains("reaches element 4 of a storage of 4"));
  CHECK_THAT(error_of(dict_of(16, 4, 0)), Catch::Contains("has 16 bytes, the pickle needs 64"));
  CHECK_THAT(error_of(Pickle().op('s').done()), Catch::Contains("stack underflow"));
  CHECK_THAT(error_of(Pickle().op('N').op('N').done()), Catch::Contains("2 values on its stack"));
  CHECK_THAT(error_of(Pickle().op('}').str("w").done().substr(0, 6)), Catch::Contains("truncated"));
  CHECK_THAT(error_of(Pickle().op('i').done()), Catch::Contains("unsupported opcode 0x69"));
  CHECK_THAT(error_of(Pickle().op('h').op('\x07').done()), Catch::Contains("memo entry 7"));
  CHECK_THAT(error_of(Pickle(1).op('}').done()), Catch::Contains("protocol 1"));
  CHECK_THAT(error_of(Pickle().int1(3).op(')').op('R').done()), Catch::Contains("REDUCE calls an int"));
  CHECK_THAT(error_of(Pickle().global("m", "f").int1(3).op('R').done()), Catch::Contains("not a tuple"));
  CHECK_THAT(error_of(Pickle().global("m", "C").int1(3).op('\x81').done()), Catch::Contains("not a tuple"));
  CHECK_THAT(error_of(Pickle(4).global("m", "C").op(')').int1(3).op('\x92').done()),
             Catch::Contains("keyword arguments are an int"));
  CHECK_THAT(error_of(Pickle().global("collections", "OrderedDict").op(')').op('\x81').done()),
             Catch::Contains("NEWOBJ of collections.OrderedDict"));
  CHECK_THAT(error_of(Pickle().global("m", "C").op(')').op('R').int1(1).op('s').done()),
             Catch::Contains("stack underflow"));
  CHECK_THAT(error_of(Pickle().global("m", "C").op(')').op('R').op('(').int1(1).op('u').done()),
             Catch::Contains("odd number"));

  // A list that contains itself, outside the state dict: read (and freed: ASan builds see no leak) and ignored.
  Pickle cyclic;
  cyclic.op('}').op('(').str("state_dict").op('}').str("w").tensor(4, 4).op('s');
  cyclic.str("loop").op(']').op('q').op('\0').op('h').op('\0').op('a').op('u');
  write_zip(t.path("cycle.pt"), cyclic.done());
  sd = read_torch_checkpoint(t.path("cycle.pt"));
  REQUIRE(sd.size() == 1);
  CHECK(torch::equal(sd.at("w"), torch::arange(4, torch::kFloat32)));
}
