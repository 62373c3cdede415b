// A plugin that registers 'sample.affine', which the sample plugin registers too: the second one to load
// must fail with an error naming both files.
#include "tessera/plugin_abi.h"
#include "tessera/registry.h"

namespace {

/// Same id as the sample's block; it never runs.
class DuplicateAffine final : public tessera::LeafBlock {
 public:
  explicit DuplicateAffine(const tessera::ValueMap&) {}
  tessera::BlockSpec spec() const override { return tessera::BlockSpec("sample.affine", "a clash"); }
  void run(tessera::Components&, tessera::BlockState&) const override {}
};

/// Registered before the clash (with a selector): a failed registration must take both back out.
class First final : public tessera::LeafBlock {
 public:
  explicit First(const tessera::ValueMap&) {}
  tessera::BlockSpec spec() const override { return tessera::BlockSpec("duplicate.first", "registered first"); }
  void run(tessera::Components&, tessera::BlockState&) const override {}
};
void register_duplicate(tessera::Registry& registry) {
  tessera::add_block_type<First>(registry, "duplicate.first", "registered before the clash");
  registry.add_selector({"duplicate.first_selector", "registered before the clash", {},
                         [](const tessera::PipelineState&) { return std::string(); }});
  tessera::add_block_type<DuplicateAffine>(registry, "sample.affine", "a clash with the sample plugin");
}

}  // namespace

TESSERA_PLUGIN("duplicate", register_duplicate)
