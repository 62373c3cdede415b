#pragma once
/// Reading construction params (recipe `params:`) against their declarations.
#include <stdexcept>

#include "tessera/spec.h"

namespace tessera {

/// The value of param `decl` in `params`, else its declared default. The registry fills defaults in
/// before construction; this covers blocks constructed directly (tests, C++ pipelines).
/// Throws std::invalid_argument (reported by the registry as a ValidationError) when neither exists.
inline const Value& param_value(const ValueMap& params, const InputParam& decl) {
  auto it = params.find(decl.name);
  if (it != params.end() && !it->second.is_none()) return it->second;
  if (decl.default_value) return *decl.default_value;
  throw std::invalid_argument("param '" + decl.name + "' is required");
}

}  // namespace tessera
