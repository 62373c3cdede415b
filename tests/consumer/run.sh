#!/usr/bin/env bash
# Installs the built Tessera into a temporary prefix, builds tests/consumer against it with
# find_package(Tessera), and runs it on the installed demo recipe.
set -euo pipefail
build_dir="$1"
src_dir="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$src_dir" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/build" -j2 > "$work/build.log"
"$work/build/consumer" "$work/prefix/share/tessera/recipes/demo/noise_to_image.yaml"
