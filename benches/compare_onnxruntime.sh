#!/usr/bin/env bash
# Scores the same windows of the shipped model with tract (criterion bench) and with
# onnxruntime (PyPI, one thread), and prints both side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=benches/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet onnxruntime numpy
fi
cargo build --release -p vigil
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./target/release/vigil simulate --seconds 4.096 --fault outer-race --severity 0.5 --seed 1 --format f32le -o "$tmp/windows.f32le" 2>/dev/null
tract=$(taskset -c 0 cargo bench -p vigil --bench window_score -- --noplot 2>/dev/null | grep -A1 score_window_tract_f32 | grep -o 'time:.*')
peer=$(taskset -c 0 "$venv/bin/python" benches/peer_onnxruntime.py models/bearing-cnn-v1.onnx "$tmp/windows.f32le")
echo "tract (vigil, 1 thread):      $tract  (per scored window, full pipeline)"
echo "$peer"
