// The C API (include/tessera/tessera.h) over the C++ engine. Every entry point catches everything: an exception
// never crosses into C; its message is kept per thread for tessera_last_error() and its class becomes the status.
#include <tessera/builtins.h>
#include <tessera/tessera.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/error.h"
#include "tessera/image_io.h"
#include "tessera/pipeline.h"
#include "tessera/plugin.h"
#include "tessera/recipe.h"
#include "tessera/registry.h"
#include "tessera/runtime.h"
#include "tessera/version.h"

namespace {
/// What a context owns; pipelines keep it alive, so a context may be freed before its pipelines.
struct ContextCore {
  tessera::Registry registry;
  tessera::PluginLoader plugins{registry};
  std::shared_ptr<tessera::ComponentsManager> manager = std::make_shared<tessera::ComponentsManager>();
};
}  // namespace

struct tessera_context {
  std::shared_ptr<ContextCore> core = std::make_shared<ContextCore>();
};

struct tessera_pipeline {
  std::shared_ptr<ContextCore> core;  // declared first: destroyed after the pipeline that refers to its registry
  std::unique_ptr<tessera::Pipeline> pipeline;
  tessera::ValueMap inputs;
};

struct tessera_result {
  tessera::PipelineState state;
  at::Tensor images;                                 // [B, 3, H, W] float, or undefined
  std::map<int, at::Tensor> rgb8;                    // index → [H, W, 3] uint8, made on first request
  std::map<std::string, at::Tensor> tensors;         // name → float32 contiguous copy
  std::map<std::string, std::vector<int64_t>> shapes;
};

namespace {

using tessera::Error;

thread_local std::string last_error;

tessera_status fail(tessera_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

/// Runs `body`, turning every exception into a status and a message.
template <typename F>
tessera_status guarded(F&& body) {
  try {
    body();
    return TESSERA_OK;
  } catch (const Error& e) {
    return fail(static_cast<tessera_status>(static_cast<int>(e.code())), e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    auto nl = what.find("\nException raised from");  // c10::Error: keep the message, drop the C++ backtrace
    if (nl != std::string::npos) what = what.substr(0, nl);
    return fail(TESSERA_ERR_INTERNAL, "internal error: " + what);
  } catch (...) {
    return fail(TESSERA_ERR_INTERNAL, "internal error: an unknown exception");
  }
}

#define TESSERA_REQUIRE(arg)                                                                   \
  do {                                                                                         \
    if (!(arg)) return fail(TESSERA_ERR_INTERNAL, std::string(__func__) + ": " #arg " is NULL"); \
  } while (0)

/// Checks `name` is an input of the pipeline and that `value` has its kind (the same check tessera run makes).
void set_input(tessera_pipeline* p, const char* name, tessera::Value value) {
  const tessera::Kind kind = p->pipeline->input_kind(name);  // InputError with did-you-mean for an unknown name
  p->inputs[name] = value.coerced(kind, std::string("input '") + name + "'");
}

/// Reports leaf block boundaries and loop steps to the C callback; a non-zero return cancels the run.
class CallbackObserver : public tessera::ExecObserver {
 public:
  CallbackObserver(tessera_progress_fn fn, void* user) : fn_(fn), user_(user), t0_(std::chrono::steady_clock::now()) {}
  void on_block_start(const std::string& path, const tessera::Block& block, tessera::PipelineState&) override {
    if (block.kind() == tessera::BlockKind::Leaf) report(TESSERA_EVENT_BLOCK_START, path, -1, -1);
  }
  void on_block_end(const std::string& path, const tessera::Block& block, tessera::PipelineState&) override {
    if (block.kind() == tessera::BlockKind::Leaf) report(TESSERA_EVENT_BLOCK_END, path, -1, -1);
  }
  /// The step event goes through RunOptions::step_callbacks, whose false return the loop turns into a cancel.
  bool step(const tessera::StepInfo& info) {
    return call(TESSERA_EVENT_STEP, info.loop_path, info.step, info.total) == 0;
  }

 private:
  int call(int event, const std::string& path, int64_t step, int64_t total) {
    tessera_progress p;
    p.event = event;
    p.path = path.c_str();
    p.step = step;
    p.total = total;
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    return fn_(&p, user_);
  }
  void report(int event, const std::string& path, int64_t step, int64_t total) {
    if (call(event, path, step, total) != 0)
      throw tessera::CancelledError(std::string("cancelled by the progress callback at the ") +
                                        (event == TESSERA_EVENT_BLOCK_START ? "start" : "end") + " of block '" +
                                        path + "'",
                                    {}, path);
  }
  tessera_progress_fn fn_;
  void* user_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

extern "C" {

const char* tessera_version(void) { return TESSERA_VERSION; }

int tessera_abi_version(void) { return TESSERA_ABI_VERSION; }

const char* tessera_last_error(void) { return last_error.c_str(); }

const char* tessera_status_name(int status) {
  if (status == 0) return "ok";
  for (const auto& e : tessera::exit_code_table())
    if (static_cast<int>(e.code) == status) return e.name;
  return "unknown";
}

int tessera_init_runtime(int threads) {
  try {
    tessera::select_blas_core();
    return tessera::configure_threads(threads);
  } catch (...) {
    return at::get_num_threads();
  }
}

tessera_status tessera_context_create(tessera_context** out) {
  TESSERA_REQUIRE(out);
  *out = nullptr;
  return guarded([&] {
    auto ctx = std::make_unique<tessera_context>();
    tessera::register_builtins(ctx->core->registry);
    *out = ctx.release();
  });
}

void tessera_context_free(tessera_context* ctx) { delete ctx; }

tessera_status tessera_load_plugin(tessera_context* ctx, const char* path) {
  TESSERA_REQUIRE(ctx);
  TESSERA_REQUIRE(path);
  return guarded([&] { ctx->core->plugins.load(path); });
}

int64_t tessera_context_loaded_bytes(const tessera_context* ctx) {
  return ctx ? static_cast<int64_t>(ctx->core->manager->total_bytes()) : 0;
}

tessera_status tessera_pipeline_load(tessera_context* ctx, const char* recipe_path, tessera_pipeline** out) {
  TESSERA_REQUIRE(out);
  *out = nullptr;
  TESSERA_REQUIRE(ctx);
  TESSERA_REQUIRE(recipe_path);
  return guarded([&] {
    std::shared_ptr<ContextCore> core = ctx->core;
    tessera::BuildOptions options;
    options.manager = core->manager;
    options.load_plugin = [core](const std::string& path, const tessera::SourceLoc& where, tessera::Registry&) {
      try {
        core->plugins.load(path);
      } catch (const tessera::PluginError& e) {
        throw tessera::PluginError(e.message(), where, {}, e.hint());
      }
    };
    auto p = std::make_unique<tessera_pipeline>();
    p->core = core;
    p->pipeline = tessera::Pipeline::from_recipe(tessera::load_recipe(recipe_path), core->registry, options);
    p->pipeline->validate();
    *out = p.release();
  });
}

void tessera_pipeline_free(tessera_pipeline* pipe) { delete pipe; }

tessera_status tessera_set_string(tessera_pipeline* pipe, const char* name, const char* text) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  TESSERA_REQUIRE(text);
  return guarded([&] { pipe->inputs[name] = pipe->pipeline->parse_input(name, text); });
}

tessera_status tessera_set_int(tessera_pipeline* pipe, const char* name, int64_t value) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  return guarded([&] { set_input(pipe, name, tessera::Value(value)); });
}

tessera_status tessera_set_float(tessera_pipeline* pipe, const char* name, double value) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  return guarded([&] { set_input(pipe, name, tessera::Value(value)); });
}

tessera_status tessera_set_bool(tessera_pipeline* pipe, const char* name, int value) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  return guarded([&] { set_input(pipe, name, tessera::Value(value != 0)); });
}

tessera_status tessera_set_image_file(tessera_pipeline* pipe, const char* name, const char* path) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  TESSERA_REQUIRE(path);
  return guarded([&] { set_input(pipe, name, tessera::Value(tessera::read_image(path))); });
}

tessera_status tessera_set_image_rgb8(tessera_pipeline* pipe, const char* name, const uint8_t* rgb, int width,
                                      int height) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  return guarded([&] { set_input(pipe, name, tessera::Value(tessera::image_from_rgb8(rgb, width, height))); });
}

tessera_status tessera_set_tensor_f32(tessera_pipeline* pipe, const char* name, const float* data,
                                      const int64_t* shape, int ndim) {
  TESSERA_REQUIRE(pipe);
  TESSERA_REQUIRE(name);
  TESSERA_REQUIRE(data);
  if (ndim < 0 || ndim > 8 || (ndim > 0 && !shape))
    return fail(TESSERA_ERR_USAGE, std::string("tessera_set_tensor_f32: input '") + name + "': ndim " +
                                       std::to_string(ndim) + " (expected 0..8 sizes in `shape`)");
  std::vector<int64_t> sizes(shape, shape + ndim);
  for (int64_t s : sizes)
    if (s < 0)
      return fail(TESSERA_ERR_USAGE, std::string("tessera_set_tensor_f32: input '") + name +
                                         "': a negative size in the shape");
  return guarded([&] {
    at::Tensor t = at::from_blob(const_cast<float*>(data), sizes, at::kFloat).clone();
    set_input(pipe, name, tessera::Value(t));
  });
}

tessera_status tessera_clear_inputs(tessera_pipeline* pipe) {
  TESSERA_REQUIRE(pipe);
  pipe->inputs.clear();
  return TESSERA_OK;
}

tessera_status tessera_run(tessera_pipeline* pipe, tessera_progress_fn progress, void* user_data,
                           tessera_result** out) {
  TESSERA_REQUIRE(out);
  *out = nullptr;
  TESSERA_REQUIRE(pipe);
  return guarded([&] {
    tessera::RunOptions options;
    std::unique_ptr<CallbackObserver> observer;
    if (progress) {
      observer = std::make_unique<CallbackObserver>(progress, user_data);
      options.observers.push_back(observer.get());
      options.step_callbacks.push_back([o = observer.get()](const tessera::StepInfo& info) { return o->step(info); });
    }
    auto result = std::make_unique<tessera_result>();
    result->state = pipe->pipeline->run(pipe->inputs, options);
    if (result->state.has("images") && result->state.get("images").kind() == tessera::Kind::Image)
      result->images = result->state.get("images").images().pixels;
    *out = result.release();
  });
}

int tessera_result_image_count(const tessera_result* res) {
  return res && res->images.defined() ? static_cast<int>(res->images.size(0)) : 0;
}

static tessera_status check_image_index(const tessera_result* res, int index, const char* func) {
  const int n = tessera_result_image_count(res);
  if (n == 0) return fail(TESSERA_ERR_OUTPUT, std::string(func) + ": the run produced no 'images' output");
  if (index < 0 || index >= n)
    return fail(TESSERA_ERR_USAGE, std::string(func) + ": image index " + std::to_string(index) + " (the result has " +
                                       std::to_string(n) + " image" + (n == 1 ? "" : "s") + ")");
  return TESSERA_OK;
}

tessera_status tessera_result_image_rgb8(tessera_result* res, int index, const uint8_t** rgb, int* width,
                                         int* height) {
  TESSERA_REQUIRE(res);
  TESSERA_REQUIRE(rgb);
  if (auto s = check_image_index(res, index, __func__)) return s;
  return guarded([&] {
    auto it = res->rgb8.find(index);
    if (it == res->rgb8.end()) it = res->rgb8.emplace(index, tessera::image_to_rgb8(res->images[index])).first;
    *rgb = it->second.data_ptr<uint8_t>();
    if (width) *width = static_cast<int>(it->second.size(1));
    if (height) *height = static_cast<int>(it->second.size(0));
  });
}

tessera_status tessera_result_write_png(const tessera_result* res, int index, const char* path) {
  TESSERA_REQUIRE(res);
  TESSERA_REQUIRE(path);
  if (auto s = check_image_index(res, index, __func__)) return s;
  return guarded([&] {
    tessera::TextChunks chunks{{"Software", std::string("Tessera ") + TESSERA_VERSION}};
    if (res->state.has("seed")) chunks.push_back({"tessera.seed", res->state.get("seed").repr()});
    tessera::write_png(path, res->images[index], chunks);
  });
}

tessera_status tessera_result_tensor_f32(tessera_result* res, const char* name, const float** data,
                                         const int64_t** shape, int* ndim) {
  TESSERA_REQUIRE(res);
  TESSERA_REQUIRE(name);
  TESSERA_REQUIRE(data);
  return guarded([&] {
    auto it = res->tensors.find(name);
    if (it == res->tensors.end()) {
      if (!res->state.has(name))
        throw tessera::OutputError(std::string("the run produced no output '") + name + "'", {}, {},
                                   tessera::did_you_mean(name, res->state.names()));
      const tessera::Value& v = res->state.get(name);
      at::Tensor t;
      if (v.kind() == tessera::Kind::Tensor)
        t = v.tensor(name);
      else if (v.kind() == tessera::Kind::Image)
        t = v.images().pixels;
      else
        throw tessera::OutputError(std::string("output '") + name + "' is a " + tessera::kind_name(v.kind()) +
                                   ", not a tensor");
      t = t.detach().to(at::kCPU, at::kFloat).contiguous();
      res->shapes[name] = t.sizes().vec();
      it = res->tensors.emplace(name, t).first;
    }
    *data = it->second.data_ptr<float>();
    if (shape) *shape = res->shapes[name].data();
    if (ndim) *ndim = static_cast<int>(it->second.dim());
  });
}

tessera_status tessera_result_int(const tessera_result* res, const char* name, int64_t* value) {
  TESSERA_REQUIRE(res);
  TESSERA_REQUIRE(name);
  TESSERA_REQUIRE(value);
  return guarded([&] {
    if (!res->state.has(name))
      throw tessera::OutputError(std::string("the run produced no output '") + name + "'", {}, {},
                                 tessera::did_you_mean(name, res->state.names()));
    *value = res->state.get(name).to_int(name);
  });
}

void tessera_result_free(tessera_result* res) { delete res; }

}  // extern "C"
