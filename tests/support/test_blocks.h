#pragma once
/// Small real blocks and components for engine tests: the engine is the thing under test, these
/// blocks do simple arithmetic so that every rule has an observable effect.
#include "tessera/registry.h"

namespace tessera::test {

/// Registers test.* blocks, the TestScale component type and test selectors.
///  - test.const      params {output: string, value: float}          → <output> (float)
///  - test.add        inputs a (float, required), b (float, default 1) → sum (float)
///  - test.mul        inputs sum (float, required), factor (float, default 2) → product (float)
///  - test.tensor_fill inputs size (int, default 4), value (float, default 0) → x (tensor)
///  - test.tensor_add  inputs x (tensor, required), i (int, required) → x (tensor, x + i)
///  - test.to_string   inputs product (float, required) → text (string)
///  - test.need_image  inputs image (image, required) → described (string)
///  - test.need_text   inputs text (string, required) → length (int)
///  - test.scaled      component scaler (TestScale, from_config) inputs a (float, required) → scaled (float)
///  - test.configured config offset (float, default 0.5) inputs a (float, required) → shifted (float)
///  - test.bad_read    reads an undeclared name (SpecError)
///  - test.no_output   declares output 'y' and never sets it (SpecError)
///  - test.throws      throws std::runtime_error (ExecutionError)
void register_test_blocks(Registry& r);

/// A from_config component: multiplies by config.factor (default 3).
class TestScale : public Component {
 public:
  explicit TestScale(double factor) : factor_(factor) {}
  std::string type() const override { return "TestScale"; }
  double factor() const { return factor_; }
  static int instances;  ///< how many were created (lazy/eager/dedup tests)

 private:
  double factor_;
};

/// Counts loads of a from_pretrained component type TestWeights (reads nothing; counts creations).
class TestWeights : public Component {
 public:
  std::string type() const override { return "TestWeights"; }
  static int loads;
};

}  // namespace tessera::test
