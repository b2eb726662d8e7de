#!/usr/bin/env bash
# From a fresh clone: installs the build dependencies, builds everything, and runs
# the small model shipped with the repository (built from the real Gemma 4 vocabulary
# and seeded synthetic weights, so its answer is fluent-looking nonsense).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(cat tools/build-deps.txt) >/dev/null
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build
echo
echo "== gemma-run on the shipped small model (build/tools/gemma4-tiny.gguf)"
build/tools/gemma-run -m build/tools/gemma4-tiny.gguf --seed 42 -n 32 "Why is the sky blue?"
