#!/usr/bin/env bash
# Tessera's tessera_bench_dit and diffusers' bench_dit.py, interleaved in one session (T D T D …), on the same
# configurations, thread count and OpenBLAS core. Each run's output is appended to LOG with the date and the load
# average before it; ratios are taken between neighbouring runs.
#
#   tools/bench/diffusers/side_by_side.sh BUILD_DIR LOG REPEATS THREADS "ARGS" ["ARGS" …]
#   e.g. … build-bench /tmp/dit.log 1 2 "--model sd35m --tokens 1024 --dtype fp32 --cfg batched --runs 1"
#
# Needs ../shared/bench/diffusers/setup.sh done once (real diffusers 0.40 on Debian's python3-torch 1.13).
# OPENBLAS_CORETYPE: Tessera picks its core itself (select_blas_core, printed on its "BLAS:" line); diffusers gets
# the same through the environment. Set it before calling, or this script uses the one tessera_bench_dit reports.
set -euo pipefail
build=$1 log=$2 repeats=$3 threads=$4
shift 4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
shared="${TESSERA_SHARED_BENCH:-$repo/../shared/bench/diffusers}"
# shellcheck disable=SC1091
. "$shared/env.sh"
bench="$build/tools/bench/tessera_bench_dit"
[[ -x "$bench" ]] || { echo "no $bench (build the tessera_bench_dit target)" >&2; exit 1; }
run() {  # name, command…
  local name=$1
  shift
  { echo "=== $name $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
    echo "\$ $*"; } >>"$log"
  "$@" >>"$log" 2>&1 || echo "(exit $?)" >>"$log"
}
for r in $(seq 1 "$repeats"); do
  for args in "$@"; do
    # shellcheck disable=SC2086
    run "tessera #$r" "$bench" $args --threads "$threads"
    if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
      core=$(grep -o 'OpenBLAS core in use: [A-Za-z0-9]*' "$log" | tail -1 | awk '{print $5}' || true)
      [[ -n "$core" ]] && export OPENBLAS_CORETYPE=$core
    fi
    # shellcheck disable=SC2086
    run "diffusers #$r" /usr/bin/python3 "$here/bench_dit.py" $args --threads "$threads"
  done
done
