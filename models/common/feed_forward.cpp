#include "models/common/feed_forward.h"

#include <torch/torch.h>

#include "tessera/error.h"

namespace tessera {

GELUImpl::GELUImpl(int64_t dim_in, int64_t dim_out, std::string approximate_, bool bias)
    : approximate(std::move(approximate_)),
      proj(register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(dim_in, dim_out).bias(bias)))) {
  if (approximate != "none" && approximate != "tanh")
    throw ModelLoadError("GELU: approximate must be \"none\" or \"tanh\", got \"" + approximate + "\"");
}

at::Tensor GELUImpl::forward(const at::Tensor& hidden_states) {
  return at::gelu(proj(hidden_states), approximate);  // [..., dim_out]
}

GEGLUImpl::GEGLUImpl(int64_t dim_in, int64_t dim_out, bool bias)
    : proj(register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(dim_in, dim_out * 2).bias(bias)))) {}

at::Tensor GEGLUImpl::forward(const at::Tensor& hidden_states) {
  auto parts = proj(hidden_states).chunk(2, -1);  // hidden, gate: [..., dim_out] each
  return parts[0] * at::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(FeedForwardOptions options_) : options(std::move(options_)) { build(); }

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t inner_dim, bool bias)
    : options(FeedForwardOptions(dim).inner_dim(inner_dim).bias(bias)) {
  build();
}

void FeedForwardImpl::build() {
  const int64_t dim = options.dim();
  const int64_t inner_dim = options.inner_dim().value_or(dim * options.mult());
  const int64_t dim_out = options.dim_out().value_or(dim);
  const std::string& act = options.activation_fn();
  std::shared_ptr<torch::nn::Module> net0;
  if (act == "geglu") {
    net_0_geglu = GEGLU(dim, inner_dim, options.bias());
    net0 = net_0_geglu.ptr();
  } else if (act == "gelu" || act == "gelu-approximate") {
    net_0_gelu = GELU(dim, inner_dim, act == "gelu" ? "none" : "tanh", options.bias());
    net0 = net_0_gelu.ptr();
  } else {
    throw ModelLoadError("FeedForward: activation_fn \"" + act +
                         "\" is not supported (supported: \"geglu\", \"gelu\", \"gelu-approximate\")");
  }
  net_2 = torch::nn::Linear(torch::nn::LinearOptions(inner_dim, dim_out).bias(options.bias()));
  net = register_module("net", torch::nn::ModuleList());
  net->push_back(net0);
  net->push_back(torch::nn::Dropout(0.0));
  net->push_back(net_2);
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& hidden_states) {
  // net.0: projection + activation → [..., inner]; net.1 (dropout) is the identity at inference
  at::Tensor h = net_0_geglu ? net_0_geglu(hidden_states) : net_0_gelu(hidden_states);
  return net_2(h);  // [..., dim_out]
}

}  // namespace tessera
