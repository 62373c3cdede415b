#include "tests/support/test_blocks.h"

#include <stdexcept>

namespace tessera::test {

int TestScale::instances = 0;
int TestWeights::loads = 0;

namespace {

class Const final : public LeafBlock {
 public:
  explicit Const(const ValueMap& p) : output_(p.at("output").str()), value_(p.at("value").to_float()) {}
  BlockSpec spec() const override {
    return BlockSpec("test.const", "Outputs a constant float").output({output_, Kind::Float, "the constant"});
  }
  void run(Components&, BlockState& s) const override { s.set(output_, Value(value_)); }

 private:
  std::string output_;
  double value_;
};

class Add final : public LeafBlock {
 public:
  explicit Add(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.add", "sum = a + b")
        .input({"a", Kind::Float, "first term", true})
        .input({"b", Kind::Float, "second term", false, Value(1.0)})
        .output({"sum", Kind::Float, "a + b"});
  }
  void run(Components&, BlockState& s) const override { s.set("sum", Value(s.get_float("a") + s.get_float("b"))); }
};

class Mul final : public LeafBlock {
 public:
  explicit Mul(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.mul", "product = sum * factor")
        .input({"sum", Kind::Float, "value", true})
        .input({"factor", Kind::Float, "factor", false, Value(2.0)})
        .output({"product", Kind::Float, "sum * factor"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("product", Value(s.get_float("sum") * s.get_float("factor")));
  }
};

class TensorFill final : public LeafBlock {
 public:
  explicit TensorFill(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.tensor_fill", "x = full(size, value)")
        .input({"size", Kind::Int, "length", false, Value(int64_t{4})})
        .input({"value", Kind::Float, "fill value", false, Value(0.0)})
        .output({"x", Kind::Tensor, "filled tensor [size]"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("x", Value(at::full({s.get_int("size")}, s.get_float("value"), at::kFloat)));
  }
};

class TensorAdd final : public LeafBlock {
 public:
  explicit TensorAdd(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.tensor_add", "x = x + i (loop body)")
        .input({"x", Kind::Tensor, "tensor", true})
        .input({"i", Kind::Int, "loop index", true})
        .output({"x", Kind::Tensor, "x + i"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("x", Value(s.tensor("x") + static_cast<double>(s.get_int("i"))));
  }
};

class ToString final : public LeafBlock {
 public:
  explicit ToString(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.to_string", "text = str(product)")
        .input({"product", Kind::Float, "value", true})
        .output({"text", Kind::String, "decimal text"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("text", Value(std::to_string(s.get_float("product"))));
  }
};

class NeedImage final : public LeafBlock {
 public:
  explicit NeedImage(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.need_image", "describes an image")
        .input(InputParam::from_template("image").as_required())
        .output({"described", Kind::String, "shape text"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("described", Value(s.get("image").repr()));
  }
};

class NeedText final : public LeafBlock {
 public:
  explicit NeedText(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.need_text", "length of a text")
        .input({"text", Kind::String, "text", true})
        .output({"length", Kind::Int, "number of bytes"});
  }
  void run(Components&, BlockState& s) const override {
    s.set("length", Value(static_cast<int64_t>(s.get_string("text").size())));
  }
};

class Scaled final : public LeafBlock {
 public:
  explicit Scaled(const ValueMap&) {}
  BlockSpec spec() const override {
    ComponentSpec c;
    c.name = "scaler";
    c.type = "TestScale";
    c.creation = Creation::FromConfig;
    return BlockSpec("test.scaled", "scaled = a * scaler.factor")
        .component(c)
        .input({"a", Kind::Float, "value", true})
        .output({"scaled", Kind::Float, "a * factor"});
  }
  void run(Components& c, BlockState& s) const override {
    auto scaler = c.get_as<TestScale>("scaler");
    s.set("scaled", Value(s.get_float("a") * scaler->factor()));
  }
};

class Weighted final : public LeafBlock {
 public:
  explicit Weighted(const ValueMap&) {}
  BlockSpec spec() const override {
    ComponentSpec c;
    c.name = "weights";
    c.type = "TestWeights";
    return BlockSpec("test.weighted", "uses a from_pretrained component")
        .component(c)
        .input({"a", Kind::Float, "value", true})
        .output({"weighted", Kind::Float, "a"});
  }
  void run(Components& c, BlockState& s) const override {
    c.get_as<TestWeights>("weights");
    s.set("weighted", Value(s.get_float("a")));
  }
};

class Configured final : public LeafBlock {
 public:
  explicit Configured(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.configured", "shifted = a + config offset")
        .config({"offset", Value(0.5), "added to a"})
        .input({"a", Kind::Float, "value", true})
        .output({"shifted", Kind::Float, "a + offset"});
  }
  void run(Components& c, BlockState& s) const override {
    s.set("shifted", Value(s.get_float("a") + c.config("offset").to_float("offset")));
  }
};

class BadRead final : public LeafBlock {
 public:
  explicit BadRead(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.bad_read", "reads an undeclared input").input({"a", Kind::Float, "value"});
  }
  void run(Components&, BlockState& s) const override { s.get("secret"); }
};

class NoOutput final : public LeafBlock {
 public:
  explicit NoOutput(const ValueMap&) {}
  BlockSpec spec() const override {
    return BlockSpec("test.no_output", "forgets its output").output({"y", Kind::Float, "never set"});
  }
  void run(Components&, BlockState&) const override {}
};

class Throws final : public LeafBlock {
 public:
  explicit Throws(const ValueMap&) {}
  BlockSpec spec() const override { return BlockSpec("test.throws", "always fails"); }
  void run(Components&, BlockState&) const override { throw std::runtime_error("boom"); }
};

}  // namespace

void register_test_blocks(Registry& r) {
  add_block_type<Const>(r, "test.const", "Outputs a constant",
                        {{"output", Kind::String, "output name", true}, {"value", Kind::Float, "the value", true}});
  add_block_type<Add>(r, "test.add", "sum = a + b");
  add_block_type<Mul>(r, "test.mul", "product = sum * factor");
  add_block_type<TensorFill>(r, "test.tensor_fill", "x = full(size, value)");
  add_block_type<TensorAdd>(r, "test.tensor_add", "x = x + i");
  add_block_type<ToString>(r, "test.to_string", "text = str(product)");
  add_block_type<NeedImage>(r, "test.need_image", "describes an image");
  add_block_type<NeedText>(r, "test.need_text", "length of a text");
  add_block_type<Scaled>(r, "test.scaled", "scaled = a * factor");
  add_block_type<Weighted>(r, "test.weighted", "uses a from_pretrained component");
  add_block_type<Configured>(r, "test.configured", "shifted = a + config offset");
  add_block_type<BadRead>(r, "test.bad_read", "reads an undeclared input");
  add_block_type<NoOutput>(r, "test.no_output", "forgets its output");
  add_block_type<Throws>(r, "test.throws", "always fails");
  r.add_component_type({"TestScale", ComponentCategory::Other, "multiplies by config.factor",
                        [](const ComponentSpec& spec) -> ComponentPtr {
                          double f = 3.0;
                          if (spec.config.kind() == Kind::Map && spec.config.map().count("factor"))
                            f = spec.config.map().at("factor").to_float("factor");
                          ++TestScale::instances;
                          return std::make_shared<TestScale>(f);
                        },
                        {}});
  r.add_component_type({"TestWeights", ComponentCategory::Model, "counts loads",
                        [](const ComponentSpec&) -> ComponentPtr {
                          ++TestWeights::loads;
                          return std::make_shared<TestWeights>();
                        },
                        {}});
  r.add_selector({"test.has_mask_and_image", "'inpaint' with image and mask_image, 'image2image' with image only",
                  {"image", "mask_image"}, [](const PipelineState& s) -> std::string {
                    if (s.has("image") && s.has("mask_image")) return "inpaint";
                    return s.has("image") ? "image2image" : "text2image";
                  }});
}

}  // namespace tessera::test
