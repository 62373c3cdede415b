#pragma once
// Helpers shared by the guider tests: where the parity goldens are, and a tolerance check that explains itself.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <string>

namespace tessera {

/// The parity folder (manifest.json, cases/): the repository's copy in tests/fixtures/parity.
std::string parity_dir();

/// The manifest, read leniently: Python's json writes NaN/Infinity, which JSON lacks; they become null (no
/// guider case reads those fields).
nlohmann::json read_parity_manifest(const std::string& dir);

/// Empty when |got - expected| <= atol + rtol*|expected| everywhere (NaN matches NaN); otherwise a line with the
/// max abs diff, the worst index and the cosine similarity.
std::string compare_tensors(const at::Tensor& got, const at::Tensor& expected, double atol, double rtol);

}  // namespace tessera
