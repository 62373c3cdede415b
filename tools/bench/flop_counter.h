#pragma once
/// FLOPs of a model forward, counted with a LibTorch RecordFunction observer (shared by the model benchmarks).
///
///   double gflop;
///   { FlopCounter count; model->forward(x); gflop = count.flops() / 1e9; }
///
/// Counted: the outermost aten::linear, addmm, mm, bmm, baddbmm and convolution calls, 2 FLOPs per
/// multiply-accumulate. A counted op that runs inside another counted op (the addmm under a linear, the mm of a
/// convolution fallback) is not counted again; ops outside that list (aten::matmul, which dispatches to mm/bmm)
/// are transparent. tessera::flash_attention (models/common/flash_attention.h) counts its two products, as the math
/// backend's two matmuls are counted. Elementwise ops, norms and softmax are not counted. One counter at a time per
/// process.
#include <ATen/record_function.h>

#include <cstring>
#include <memory>
#include <mutex>

namespace tessera::bench {

class FlopCounter {
 public:
  FlopCounter() {
    total() = 0.0;
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              if (!counted(fn.name()) || depth()++ != 0) return nullptr;
              // LibTorch lets callbacks read inputs only here, at the start: keep what the count needs.
              auto ctx = std::make_unique<Count>();
              operand_factor(fn, *ctx);
              return ctx;
            },
            [](const at::RecordFunction& fn, at::ObserverContext* ctx) {
              if (!counted(fn.name())) return;
              --depth();
              if (!ctx) return;
              const auto* c = static_cast<const Count*>(ctx);
              double f = c->flops;
              if (c->per_output > 0) {
                const auto& out = fn.outputs();
                f = !out.empty() && out[0].isTensor() ? c->per_output * static_cast<double>(out[0].toTensor().numel())
                                                      : 0.0;
              }
              std::lock_guard<std::mutex> lock(mutex());
              total() += f;
            })
            .needsInputs(true)
            .needsOutputs(true));
  }
  ~FlopCounter() { at::removeCallback(handle_); }
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;

  /// FLOPs counted since construction.
  double flops() const {
    std::lock_guard<std::mutex> lock(mutex());
    return total();
  }

  /// Whether `name` is one of the counted ops.
  static bool counted(const char* name) {
    return !std::strcmp(name, "aten::linear") || !std::strcmp(name, "aten::convolution") ||
           !std::strcmp(name, "aten::addmm") || !std::strcmp(name, "aten::mm") || !std::strcmp(name, "aten::bmm") ||
           !std::strcmp(name, "aten::baddbmm") || !std::strcmp(name, "tessera::flash_attention");
  }

 private:
  /// One counted call: FLOPs known from the inputs, or FLOPs per output element (2·contracted size).
  struct Count : at::ObserverContext {
    double flops = 0.0;
    double per_output = 0.0;
  };

  /// 2·MAC of one counted call from its operand shapes (times the output's size for all but flash attention).
  static void operand_factor(const at::RecordFunction& fn, Count& c) {
    auto in = fn.inputs();
    auto tensor = [&](size_t i) -> const at::Tensor* {
      return i < in.size() && in[i].isTensor() ? &in[i].toTensor() : nullptr;
    };
    if (!std::strcmp(fn.name(), "tessera::flash_attention")) {  // q [B, h, Lq, D], k [B, h, Lk, D], v [B, h, Lk, Dv]
      const at::Tensor *q = tensor(0), *k = tensor(1), *v = tensor(2);
      if (q && k && v)
        c.flops = 2.0 * static_cast<double>(q->numel() / q->size(-1)) * static_cast<double>(k->size(-2)) *
                  static_cast<double>(q->size(-1) + v->size(-1));
      return;
    }
    if (!std::strcmp(fn.name(), "aten::convolution")) {
      if (const at::Tensor* w = tensor(1)) c.per_output = 2.0 * static_cast<double>(w->numel() / w->size(0));  // [out, in/g, kh, kw]
      return;
    }
    // linear / (b)mm: the contracted dimension is the last one of the first operand; addmm / baddbmm: the second.
    const bool with_bias = !std::strcmp(fn.name(), "aten::addmm") || !std::strcmp(fn.name(), "aten::baddbmm");
    if (const at::Tensor* a = tensor(with_bias ? 1 : 0)) c.per_output = 2.0 * static_cast<double>(a->size(-1));
  }

  static int& depth() {
    thread_local int d = 0;
    return d;
  }
  static double& total() {
    static double t = 0.0;
    return t;
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }

  at::CallbackHandle handle_;
};

}  // namespace tessera::bench
