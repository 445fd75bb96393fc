#!/usr/bin/env bash
# The GPU check of the CUDA backend, in one device session (15 minutes of device time in all):
# conformance of the CUDA backend against the i128 reference (GOTEN_REQUIRE_CUDA=1: no silent
# skip), the kernel, op and VGG-11 training benchmarks with --device cuda, and cuBLAS f64 GEMM
# on the same shapes through PyTorch as the reference. Writes JSON lines under $OUT and prints
# a short table. Binaries come from gpu-bundle/ (scripts/gpu-bundle.sh, carried to the device)
# or, where cargo exists, are built here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/goten-gpu}
mkdir -p "$OUT"
export GOTEN_REQUIRE_CUDA=1 CI=1
if [ -x gpu-bundle/goten ]; then
  G=gpu-bundle/goten; CONF=gpu-bundle/conformance
elif command -v cargo >/dev/null; then
  cargo build --release -p goten --features cuda || exit 1
  G=target/release/goten; CONF="cargo test --release -p goten-device --features cuda --test conformance --"
else
  echo "no gpu-bundle/ and no cargo: run scripts/gpu-bundle.sh and carry gpu-bundle" >&2; exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step() { # name, timeout seconds, command...
  local name=$1 t=$2; shift 2
  local s=$(date +%s)
  timeout "$t" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - s ))s" | tee -a "$OUT/summary.txt"
  tail -3 "$OUT/$name.err"
}
step conformance 120 $CONF cuda --test-threads 1
grep -E "^test |test result" "$OUT/conformance.out" | tail -8
step kernels 120 "$G" bench kernels --device cuda --json --reps 3
step op 120 "$G" bench op --device cuda --json --reps 2
step train 240 "$G" bench train --model vgg11 --batch 512 --device cuda --modes goten --steps 2 --threads 5 --json
python3 - "$OUT" <<'PY' 2>&1 | tee "$OUT/table.txt"
import json, sys, os, time
out = sys.argv[1]
def lines(name):
    p = os.path.join(out, name + ".out")
    if not os.path.exists(p): return []
    r = []
    for l in open(p):
        try: r.append(json.loads(l))
        except Exception: pass
    return r
print("== kernels (goten mod GEMM on the GPU) ==")
for k in lines("kernels"):
    if "kernel" in k:
        print(f'{k.get("layer","")} {k["kernel"]:<12} {k.get("mod_macs_per_s",0)/1e9:10.1f} GMAC/s')
print("== op ==")
for k in lines("op")[-12:]:
    print({x: k[x] for x in k if x in ("layer", "op", "overhead", "secure_secs", "ref_secs")})
print("== train ==")
for k in lines("train"):
    print(json.dumps(k))
try:
    import torch
    print("== cuBLAS f64 GEMM through PyTorch (M, N, K of VGG-11 convs at batch 64) ==")
    for (m, n, k) in [(64, 65536, 27), (128, 16384, 576), (256, 4096, 1152), (256, 4096, 2304),
                      (512, 1024, 4608), (512, 256, 4608)]:
        a = torch.randn(m, k, dtype=torch.float64, device="cuda")
        b = torch.randn(k, n, dtype=torch.float64, device="cuda")
        torch.matmul(a, b); torch.cuda.synchronize()
        t = time.time(); reps = 10
        for _ in range(reps): torch.matmul(a, b)
        torch.cuda.synchronize()
        dt = (time.time() - t) / reps
        print(f"{m}x{n}x{k}: {m*n*k/dt/1e9:10.1f} GMAC/s f64")
except Exception as e:
    print("no PyTorch reference:", e)
PY
