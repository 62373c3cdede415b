#!/usr/bin/env bash
# Installs the built Tessera into a temporary prefix, then, against that prefix only:
#  - builds tests/consumer (C++) with find_package(Tessera) and runs it on the installed demo recipe;
#  - compiles consumer_c.c with the C compiler and `pkg-config tessera`, and runs it on the installed
#    recipes/sd/auto.yaml with the source tree's tiny-sd, checking it wrote a PNG.
set -euo pipefail
build_dir="$1"
src_dir="$(cd "$(dirname "$0")" && pwd)"
root_dir="$(cd "$src_dir/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$src_dir" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/build" -j2 > "$work/build.log"
"$work/build/consumer" "$work/prefix/share/tessera/recipes/demo/noise_to_image.yaml"

pc_dir="$(dirname "$(find "$work/prefix" -name tessera.pc | head -1)")"
export PKG_CONFIG_PATH="$pc_dir"
libdir="$(pkg-config --variable=libdir tessera)"
# libtessera.so exports the C API only.
extra="$(nm -D --defined-only "$libdir/libtessera.so" | awk '{print $3}' | grep -v '^tessera_' || true)"
[ -z "$extra" ] || { echo "libtessera.so exports more than tessera_*:"; echo "$extra" | head; exit 1; }
cc -std=c99 -Wall -Wextra -Werror -pedantic "$src_dir/consumer_c.c" -o "$work/consumer_c" \
  $(pkg-config --cflags --libs tessera) -Wl,-rpath,"$libdir"
"$work/consumer_c" "$work/prefix/share/tessera/recipes/sd/auto.yaml" "$root_dir/tests/fixtures/parity/models/tiny-sd" \
  "$work/c.png"
head -c 8 "$work/c.png" | od -An -c | grep -q "P   N   G" || { echo "consumer_c wrote no PNG"; exit 1; }
echo "consumer_c: PNG ok"
