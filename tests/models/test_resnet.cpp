// ResnetBlock2D's activations after its norms run in place when autograd is off: the result is the out-of-place
// formula's, and with autograd on the block still trains (no in-place modification of a saved tensor).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "models/common/resnet.h"

using namespace tessera;

namespace {

// ResnetBlock2D's default path written out with out-of-place ops.
at::Tensor reference(ResnetBlock2D& block, const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = at::silu(block->norm1(x));
  h = block->conv1(h) + block->time_emb_proj(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = block->conv2(at::silu(block->norm2(h)));
  return block->conv_shortcut(x) + h;
}

}  // namespace

TEST_CASE("ResnetBlock2D: in-place activations give the out-of-place result; autograd still works",
          "[model][resnet]") {
  torch::manual_seed(5);
  ResnetBlock2D block(ResnetBlock2DOptions(8).out_channels(16).temb_channels(12).groups(4));
  const at::Tensor x = torch::randn({2, 8, 6, 6}), temb = torch::randn({2, 12});
  at::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = reference(block, x, temb);
  }
  {
    c10::InferenceMode guard;
    at::Tensor got = block->forward(x, temb);
    CHECK((got - want).abs().max().item<double>() < 1e-5);
  }
  at::Tensor out = block->forward(x, temb);  // grad mode: weights require grad
  out.square().mean().backward();
  REQUIRE(block->norm1->weight.grad().defined());
  CHECK(block->norm1->weight.grad().abs().sum().item<double>() > 0);
  CHECK((out.detach() - want).abs().max().item<double>() < 1e-5);
  // apply_activation_ leaves a tensor that autograd saved alone.
  at::Tensor leaf = torch::randn({4}, torch::requires_grad());
  at::Tensor y = leaf * 2;
  at::Tensor z = apply_activation_("silu", y);
  z.sum().backward();
  CHECK(leaf.grad().allclose(2 * torch::sigmoid(y.detach()) * (1 + y.detach() * (1 - torch::sigmoid(y.detach())))));
}
