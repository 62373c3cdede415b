// SkipRandomInit: random parameter fills are no-ops inside the scope only; models loaded through it match the
// goldens (the parity tests load every model this way).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "models/loading/skip_init.h"

using namespace tessera;

TEST_CASE("SkipRandomInit turns uniform_/normal_ into no-ops for its scope only", "[models][loading]") {
  at::Tensor a = at::zeros({64}), b = at::zeros({64});
  {
    SkipRandomInit skip;
    a.uniform_(-1, 1);
    b.normal_();
    CHECK(a.abs().sum().item<float>() == 0.0f);
    CHECK(b.abs().sum().item<float>() == 0.0f);
    at::Tensor ones = at::zeros({3});
    ones.fill_(1.0);  // deterministic fills still run
    CHECK(ones.sum().item<float>() == 3.0f);
    CHECK(at::arange(4).sum().item<int64_t>() == 6);
  }
  a.uniform_(-1, 1);
  b.normal_();
  CHECK(a.abs().sum().item<float>() > 0.0f);
  CHECK(b.abs().sum().item<float>() > 0.0f);
  torch::nn::Linear after(8, 8);  // a module built afterwards is initialised as usual
  CHECK(after->weight.abs().sum().item<float>() > 0.0f);
}
