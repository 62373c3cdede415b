#pragma once
/// The built-in blocks: one explicit call registers every family (no static self-registration, which
/// linkers drop from static archives).
#include "tessera/registry.h"

namespace tessera {

/// Registers every built-in block type (common.*, and the model families as they land).
void register_builtin_blocks(Registry& r);

/// Registers leaf block class `T` from its own declarations: `T::kId`, `T::kDescription` and
/// `T::params()` (the construction params), so that the class stays the one source of its docs.
template <typename T>
void add_block_class(Registry& r) {
  add_block_type<T>(r, T::kId, T::kDescription, T::params());
}

}  // namespace tessera
