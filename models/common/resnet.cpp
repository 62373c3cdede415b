#include "models/common/resnet.h"

#include <torch/torch.h>

#include "tessera/error.h"
#include "models/common/precision.h"

namespace tessera {

namespace F = torch::nn::functional;

at::Tensor apply_activation(const std::string& name, const at::Tensor& x) {
  if (name == "swish" || name == "silu") return at::silu(x);
  if (name == "mish") return at::mish(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "relu") return at::relu(x);
  throw ModelLoadError("unsupported activation function '" + name + "' (supported: swish, silu, mish, gelu, relu)");
}

at::Tensor apply_activation_(const std::string& name, at::Tensor x) {
  if (at::GradMode::is_enabled() && x.requires_grad()) return apply_activation(name, x);
  if (name == "swish" || name == "silu") return at::silu_(x);
  if (name == "relu") return at::relu_(x);
  return apply_activation(name, x);
}

void check_activation(const std::string& name) {
  if (name != "swish" && name != "silu" && name != "mish" && name != "gelu" && name != "relu")
    apply_activation(name, at::Tensor());  // throws the message
}

ResnetBlock2DImpl::ResnetBlock2DImpl(ResnetBlock2DOptions options_) : options(std::move(options_)) {
  const int64_t in = options.in_channels();
  const int64_t out = options.out_channels().value_or(in);
  const int64_t groups_out = options.groups_out().value_or(options.groups());
  check_activation(options.non_linearity());
  if (options.time_embedding_norm() != "default" && options.time_embedding_norm() != "scale_shift")
    throw ModelLoadError("ResnetBlock2D: unsupported time_embedding_norm '" + options.time_embedding_norm() +
                         "' (supported: default, scale_shift)");
  norm1 = register_module("norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.groups(), in)
                                                             .eps(options.eps()).affine(true)));
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(1).padding(1)));
  if (options.temb_channels() > 0) {
    const int64_t temb_out = options.time_embedding_norm() == "scale_shift" ? 2 * out : out;
    time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(options.temb_channels(), temb_out));
  }
  norm2 = register_module("norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups_out, out)
                                                             .eps(options.eps()).affine(true)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).stride(1).padding(1)));
  if (options.use_in_shortcut().value_or(in != out))
    conv_shortcut = register_module(
        "conv_shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(options.conv_shortcut_bias())));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& input_tensor, const at::Tensor& temb) {
  const std::string& act = options.non_linearity();
  at::Tensor hidden_states = group_norm_fp32(*norm1, input_tensor);
  hidden_states = apply_activation_(act, std::move(hidden_states));  // the norm's own output: in place
  hidden_states = conv1(hidden_states);

  at::Tensor emb;
  if (time_emb_proj && temb.defined()) {
    emb = time_emb_proj(apply_activation(act, temb));
    emb = emb.unsqueeze(-1).unsqueeze(-1);  // [B, C or 2C, 1, 1]
  }
  if (options.time_embedding_norm() == "default") {
    if (emb.defined()) hidden_states = hidden_states + emb;
    hidden_states = group_norm_fp32(*norm2, hidden_states);
  } else {  // scale_shift
    if (!emb.defined()) throw ExecutionError("ResnetBlock2D (scale_shift) needs a time embedding");
    hidden_states = group_norm_fp32(*norm2, hidden_states);
    auto scale_shift = emb.chunk(2, 1);
    hidden_states = hidden_states * (1 + scale_shift[0]) + scale_shift[1];
  }
  hidden_states = apply_activation_(act, std::move(hidden_states));  // a fresh tensor from the norm / scale-shift
  hidden_states = conv2(hidden_states);  // dropout is the identity at inference

  at::Tensor shortcut = conv_shortcut ? conv_shortcut(input_tensor.contiguous()) : input_tensor;
  at::Tensor output = shortcut + hidden_states;
  if (options.output_scale_factor() != 1.0) output = output / options.output_scale_factor();
  return output;
}

Downsample2DImpl::Downsample2DImpl(Downsample2DOptions options_) : options(std::move(options_)) {
  const int64_t out = options.out_channels().value_or(options.channels());
  if (options.use_conv()) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), out, 3)
                                                         .stride(2)
                                                         .padding(options.padding())
                                                         .bias(options.bias())));
  } else if (out != options.channels()) {
    throw ModelLoadError("Downsample2D: average pooling cannot change the channel count");
  }
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& hidden_states) {
  if (!options.use_conv()) return F::avg_pool2d(hidden_states, F::AvgPool2dFuncOptions(2).stride(2));
  at::Tensor x = hidden_states;
  if (options.padding() == 0) x = F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0));
  return conv(x);  // [B, out, H/2, W/2]
}

Upsample2DImpl::Upsample2DImpl(Upsample2DOptions options_) : options(std::move(options_)) {
  const int64_t out = options.out_channels().value_or(options.channels());
  if (options.use_conv())
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), out,
                                                                                 options.kernel_size())
                                                         .padding(options.padding())
                                                         .bias(options.bias())));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& hidden_states,
                                   const std::optional<std::vector<int64_t>>& output_size) {
  // Nearest upsampling of bfloat16 is not implemented everywhere: compute it in float32, as diffusers does.
  const auto dtype = hidden_states.scalar_type();
  at::Tensor x = dtype == at::kBFloat16 ? hidden_states.to(at::kFloat) : hidden_states;
  if (x.size(0) >= 64) x = x.contiguous();
  if (output_size) {
    x = F::interpolate(x, F::InterpolateFuncOptions().size(*output_size).mode(torch::kNearest));
  } else {
    x = F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  }
  if (dtype == at::kBFloat16) x = x.to(dtype);
  if (conv) x = conv(x);
  return x;  // [B, out, 2H, 2W]
}

}  // namespace tessera
