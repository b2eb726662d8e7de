#!/usr/bin/env bash
# From a fresh clone: installs the build dependencies, builds everything, starts gemmad on
# the small model shipped with the repository (built from the real Gemma 4 vocabulary and
# seeded synthetic weights, so its answers are fluent-looking nonsense) on a private session
# bus and a socket, and shows it answering through gemmactl and through `gdbus call`.
# `tools/quickstart.sh --serve` keeps the service running in the foreground afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(cat tools/build-deps.txt) >/dev/null
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build

# A session bus of our own (a fresh machine or a container has none), then the demo.
exec dbus-run-session -- tools/quickstart-demo.sh "$@"
