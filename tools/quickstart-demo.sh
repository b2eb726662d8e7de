#!/usr/bin/env bash
# Second half of quickstart.sh, run inside a session bus: starts build/gemmad on the shipped
# small model (with its small multimodal projector) and asks it the same question over the
# socket (gemmactl) and over D-Bus (gdbus), then asks about a picture and a recording.
set -euo pipefail
cd "$(dirname "$0")/.."
model=build/tools/gemma4-tiny.gguf
mmproj=build/tools/gemma4-tiny-mmproj.gguf
rundir=$(mktemp -d /tmp/gemmad-quickstart.XXXXXX)
sock=$rundir/gemmad.sock

echo
echo "== starting: build/gemmad --session --model $model --mmproj $mmproj --socket $sock"
build/gemmad --session --model "$model" --mmproj "$mmproj" --socket "$sock" 2>"$rundir/gemmad.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$rundir"' EXIT
for _ in $(seq 100); do
    grep -q '^gemmad: ready' "$rundir/gemmad.log" && break
    kill -0 $pid 2>/dev/null || { cat "$rundir/gemmad.log"; exit 1; }
    sleep 0.1
done
cat "$rundir/gemmad.log"

echo
echo "== gemmactl --socket $sock info"
build/client/gemmactl --socket "$sock" info
echo
echo "== gemmactl --socket $sock generate --seed 42 -n 32 \"Why is the sky blue?\""
build/client/gemmactl --socket "$sock" generate --seed 42 -n 32 "Why is the sky blue?"
echo
echo "== gdbus call --session ... org.gemmad.Gemmad1.Manager.Respond"
gdbus call --session --dest org.gemmad.Gemmad1 --object-path /org/gemmad/Gemmad1 \
    --timeout 600 --method org.gemmad.Gemmad1.Manager.Respond \
    "[{'type': <'text'>, 'text': <'Why is the sky blue?'>}]" \
    "{'max_tokens': <32>, 'seed': <uint64 42>}"
echo
image=tests/conformance/mm-vision/photo-exif6.jpg
echo "== gemmactl --socket $sock generate --seed 42 -n 32 --image $image \"What is in this picture?\""
build/client/gemmactl --socket "$sock" generate --seed 42 -n 32 --image "$image" "What is in this picture?"
echo
sound=tests/data/audio/speech-16k-mono.flac
echo "== gemmactl --socket $sock generate --seed 42 -n 32 --audio $sound \"Transcribe this.\""
build/client/gemmactl --socket "$sock" generate --seed 42 -n 32 --audio "$sound" "Transcribe this."

if [ "${1:-}" = "--serve" ]; then
    echo
    echo "== serving until Ctrl-C (socket $sock, session bus $DBUS_SESSION_BUS_ADDRESS)"
    wait $pid
fi
