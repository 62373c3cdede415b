#pragma once
/// FLOPs of a model forward, counted with a LibTorch RecordFunction observer (shared by the model benchmarks).
///
///   double gflop;
///   { FlopCounter count; model->forward(x); gflop = count.flops() / 1e9; }
///
/// Counted: the outermost aten::linear, addmm, mm, bmm, baddbmm and convolution calls, 2 FLOPs per
/// multiply-accumulate. A counted op that runs inside another counted op (the addmm under a linear, the mm of a
/// convolution fallback) is not counted again; ops outside that list (aten::matmul, which dispatches to mm/bmm)
/// are transparent. Elementwise ops, norms and softmax are not counted. One counter at a time per process.
#include <ATen/record_function.h>

#include <cstring>
#include <mutex>

namespace tessera::bench {

class FlopCounter {
 public:
  FlopCounter() {
    total() = 0.0;
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              if (counted(fn.name())) ++depth();
              return nullptr;
            },
            [](const at::RecordFunction& fn, at::ObserverContext*) {
              if (!counted(fn.name())) return;
              if (--depth() == 0) {
                const double f = op_flops(fn);
                std::lock_guard<std::mutex> lock(mutex());
                total() += f;
              }
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
           !std::strcmp(name, "aten::baddbmm");
  }

  /// 2·MAC of one counted call, from its output and operand shapes.
  static double op_flops(const at::RecordFunction& fn) {
    const auto& out = fn.outputs();
    auto in = fn.inputs();
    if (out.empty() || !out[0].isTensor() || in.size() < 2 || !in[0].isTensor() || !in[1].isTensor()) return 0.0;
    const at::Tensor& y = out[0].toTensor();
    const double n = static_cast<double>(y.numel());
    if (!std::strcmp(fn.name(), "aten::convolution")) {
      const at::Tensor& w = in[1].toTensor();  // [out, in/groups, kh, kw]
      return 2.0 * n * static_cast<double>(w.numel() / w.size(0));
    }
    if (!std::strcmp(fn.name(), "aten::linear")) return 2.0 * n * static_cast<double>(in[0].toTensor().size(-1));
    // (b)mm / addmm / baddbmm: the contracted dimension is the last one of the first matrix operand.
    const bool with_bias = !std::strcmp(fn.name(), "aten::addmm") || !std::strcmp(fn.name(), "aten::baddbmm");
    if (with_bias && (in.size() < 3 || !in[2].isTensor())) return 0.0;
    const at::Tensor& a = with_bias ? in[1].toTensor() : in[0].toTensor();
    return 2.0 * n * static_cast<double>(a.size(-1));
  }

 private:
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
