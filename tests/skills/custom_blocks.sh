#!/usr/bin/env bash
# Follows the "Walkthrough" of .ai/skills/custom-blocks/SKILL.md literally, in an empty temporary folder:
# every fenced block whose first line is `// file: NAME` or `# file: NAME` becomes that file, every other
# ```bash block is run in order (TESSERA_BUILD = the build folder given, TESSERA_PREFIX = a fresh prefix).
# Then checks what the skill promises: the plugin's block documented, the recipe valid, the state as stated.
# Usage: custom_blocks.sh BUILD_DIR
set -euo pipefail
build_dir="$(cd "$1" && pwd)"
src_dir="$(cd "$(dirname "$0")/../.." && pwd)"
skill="$src_dir/.ai/skills/custom-blocks/SKILL.md"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/my_blocks"

awk -v dir="$work/my_blocks" '
  !fence && /^## / { walk = ($0 == "## Walkthrough"); next }
  !walk { next }
  !fence && /^```/ { fence = 1; lang = substr($0, 4); first = 1; out = "/dev/null"; next }
  fence && /^```$/ { fence = 0; next }
  fence {
    if (first) {
      first = 0
      if (match($0, /^(\/\/|#) file: /)) out = dir "/" substr($0, RLENGTH + 1)
      else if (lang == "bash") out = dir "/steps.sh"
    }
    print $0 >> out
  }' "$skill"

cd "$work/my_blocks"
for f in my_blocks.cpp CMakeLists.txt shifted_noise.yaml steps.sh; do
  [[ -s "$f" ]] || { echo "the skill's walkthrough has no $f" >&2; exit 1; }
done

export TESSERA_BUILD="$build_dir" TESSERA_PREFIX="$work/prefix"
echo "--- running the skill's shell steps"
bash -euo pipefail -x steps.sh > steps.log 2>&1 || { cat steps.log; cat cmake.log build.log 2>/dev/null || true; exit 1; }
cat steps.log

tessera="$TESSERA_PREFIX/bin/tessera"
fail() { echo "FAIL: $*" >&2; exit 1; }
grep -q "my_blocks.shift_latents" steps.log || fail "blocks show did not document my_blocks.shift_latents"
grep -q "offset" steps.log || fail "blocks show did not list the offset input"
[[ -s shifted.safetensors ]] || fail "no shifted.safetensors"
[[ "$(head -c 8 shifted.png | od -An -c | tr -d ' ')" == "211PNG\r\n032\n" ]] || fail "shifted.png is not a PNG"

# "every latent of shifted.safetensors is exactly 0.25" (read without any Tessera code)
if command -v python3 > /dev/null; then
  python3 - shifted.safetensors <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
entry = header["latents"]
assert entry["dtype"] == "F32" and entry["shape"] == [1, 3, 32, 32], entry
begin, end = entry["data_offsets"]
values = struct.unpack("<%df" % ((end - begin) // 4), data[begin:end])
assert all(v == 0.25 for v in values), sorted(set(values))[:5]
print("latents: %d values, all 0.25" % len(values))
PY
fi

# A typed error from the plugin's block, with the block path (InputError, exit code 5).
set +e
out="$("$tessera" -q run shifted_noise.yaml --set offset=inf --out bad.png 2>&1)"
rc=$?
set -e
echo "$out"
[[ $rc -eq 5 ]] || fail "offset=inf: exit code $rc, expected 5 (input)"
[[ "$out" == *offset* ]] || fail "offset=inf: the message does not name the input"
[[ ! -e bad.png ]] || fail "a failed run left bad.png"
echo "custom-blocks skill: OK"
