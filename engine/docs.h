#pragma once
/// Documentation generated from specs: a block's docs and a whole recipe's, never written by hand.
#include <string>

#include "tessera/pipeline.h"
#include "tessera/registry.h"

namespace tessera {

/// Markdown for one registered block type: description, params, components, configs, inputs, outputs.
/// `block` is an instance built with default params (nullptr when its params have no defaults).
std::string block_doc(const BlockTypeInfo& info, const LeafBlock* block);

/// Markdown for a recipe: its inputs (kinds, defaults, required), workflows with their resolved
/// execution lists, components, and the block tree with each block's interface.
std::string recipe_doc(const Pipeline& pipeline);

}  // namespace tessera
