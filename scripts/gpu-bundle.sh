#!/usr/bin/env bash
# Builds, on the development machine, what scripts/gpu-check.sh runs on a GPU machine that has
# no Rust toolchain: the goten binary and the device conformance tests, both with the CUDA
# backend (cudarc loads CUDA at run time, so this builds without CUDA installed).
# Usage: scripts/gpu-bundle.sh   -> gpu-bundle/{goten,conformance}; then, with the device tool:
#   run(command="bash scripts/gpu-check.sh", carry=["gpu-bundle"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p goten --features cuda
exe=$(cargo test --release --locked -p goten-device --features cuda --test conformance --no-run \
        --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance":
        print(m["executable"])' | tail -1)
rm -rf gpu-bundle && mkdir -p gpu-bundle
cp target/release/goten gpu-bundle/goten
cp "$exe" gpu-bundle/conformance
ls -la gpu-bundle
