#!/usr/bin/env bash
# Builds gemmad and runs its test suite (unit, conformance against transformers
# references, fuzz-corpus replay). `--asan` uses a separate ASan/UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build
args=(--buildtype=release)
if [ "${1:-}" = "--asan" ]; then
    dir=build-asan
    args=(--buildtype=debugoptimized -Db_sanitize=address,undefined)
fi
[ -d "$dir" ] || meson setup "$dir" "${args[@]}" >/dev/null
ninja -C "$dir"
meson test -C "$dir" --print-errorlogs --num-processes 2 -t 4
