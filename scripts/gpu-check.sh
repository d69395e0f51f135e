#!/usr/bin/env bash
# Weir against real NVIDIA GPUs: NVML discovery, GPU-aware placement, and an exec PE
# computing on the device the master gave it. For a machine with an NVIDIA driver and
# python3 (torch optional: without it the PE computes on the CPU and says so).
#
#   scripts/gpu-check.sh [BIN]   # BIN holds weir-master, weir-worker, weirctl and the
#                                # compiled worker/tests/nvml.rs as nvml-test
#                                # (default: target/debug, after `cargo test --no-run`)
#
# What it does, and fails on:
#   1. nvml-test with WEIR_REQUIRE_GPU=1: NVML reports every device sanely;
#   2. a dev master, a worker that asks NVML and one that must not (--no-nvml);
#      `weirctl workers` shows the GPUs with their memory and utilisation;
#   3. examples/gpu-square.yaml: `square` (1 GPU slice, 4 GiB) lands on the GPU
#      worker, every record arrives exactly once, and every output record says it was
#      computed on the GPU the PE was given (CUDA_VISIBLE_DEVICES = its UUID);
#   4. an app asking for more GPU memory than any device has is not placed, and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug}
NVML_TEST=${NVML_TEST:-$BIN/nvml-test}
work=$(mktemp -d)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    # GPU_CHECK_LOGS=DIR keeps the master's and workers' logs.
    if [[ -n "${GPU_CHECK_LOGS:-}" ]]; then
        cp "$work"/*.log "$GPU_CHECK_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
MASTER=127.0.0.1:17000
ctl() { "$BIN/weirctl" --master "$MASTER" "$@"; }
# Polls `$@` (a shell condition) every 0.2 s for up to $1 seconds.
within() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= end)); then
            echo "timed out after ${secs}s waiting for: $*" >&2
            return 1
        fi
        sleep 0.2
    done
}

echo "== nvidia-smi"
nvidia-smi --query-gpu=uuid,name,memory.total,memory.used,utilization.gpu --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' ||
    echo "(no torch: the GPU PE will compute on the CPU)"

echo "== NVML discovery (worker/tests/nvml.rs)"
WEIR_REQUIRE_GPU=1 "$NVML_TEST" --nocapture

echo "== a dev master, worker 'gpu' (NVML) and worker 'cpu' (--no-nvml)"
"$BIN/weir-master" --dev --insecure --data-dir "$work/master" --listen "$MASTER" >"$work/master.log" 2>&1 &
"$BIN/weir-worker" --insecure --id gpu --master "$MASTER" --control-address 127.0.0.1:17101 \
    --data-address 127.0.0.1:17201 >"$work/gpu.log" 2>&1 &
"$BIN/weir-worker" --insecure --id cpu --no-nvml --master "$MASTER" --control-address 127.0.0.1:17102 \
    --data-address 127.0.0.1:17202 >"$work/cpu.log" 2>&1 &
two_workers() { [[ "$(ctl -o json workers 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" == 2 ]]; }
within 60 two_workers
ctl workers
ctl -o json workers >"$work/workers.json"

echo "== examples/gpu-square.yaml"
rm -f /tmp/weir-gpu-square.jsonl
ctl submit examples/gpu-square.yaml
audited() {
    ctl -o json get gpu-square >"$work/app.json" 2>/dev/null &&
        python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))
v = [p["verify"] for p in a["pes"] if p["verify"]]
sys.exit(0 if v and all(x["inputs_ended"] for x in v) else 1)' "$work/app.json"
}
within 180 audited
ctl get gpu-square
written() { [[ -f /tmp/weir-gpu-square.jsonl && "$(wc -l </tmp/weir-gpu-square.jsonl)" -ge 20000 ]]; }
within 60 written
python3 - "$work/app.json" "$work/workers.json" /tmp/weir-gpu-square.jsonl <<'EOF'
import json, subprocess, sys
app = json.load(open(sys.argv[1]))
workers = {w["worker"]: w for w in json.load(open(sys.argv[2]))}
square = [p for p in app["pes"] if p["pe"].startswith("square@")]
assert len(square) == 1, square
sq = square[0]
assert sq["worker"] == "gpu", f"placed on {sq['worker']}, not the GPU worker"
nvml = {g["uuid"]: g for g in workers["gpu"]["gpus"] if not g["declared"]}
assert workers["cpu"]["gpus"] == [], workers["cpu"]
assert len(sq["gpus"]) == 1 and sq["gpus"][0] in nvml, (sq["gpus"], list(nvml))
uuid = sq["gpus"][0]
audit = [p["verify"] for p in app["pes"] if p["verify"]][0]
assert (audit["records"], audit["distinct"], audit["duplicates"]) == (20000, 20000, 0), audit
lines = [json.loads(l) for l in open(sys.argv[3])]
assert len(lines) == 20000, len(lines)
devices = {r["device"] for r in lines}
visible = {r["visible"] for r in lines}
assert visible == {uuid}, visible
assert all(r["square"] == r["value"] ** 2 for r in lines)
print(f"square ran on worker 'gpu', GPU {uuid} ({nvml[uuid]['model']}, "
      f"{nvml[uuid]['memory_total_mb']} MiB); its program computed on {sorted(devices)}; "
      f"20000 records exactly once")
EOF

echo "== an app no device can hold (a slice of 200,000 MiB)"
sed -e 's/name: gpu-square/name: too-big/' -e 's/memory_mb: 4096/memory_mb: 200000/' \
    -e 's#/tmp/weir-gpu-square.jsonl#/tmp/weir-too-big.jsonl#' examples/gpu-square.yaml >"$work/big.yaml"
ctl submit "$work/big.yaml"
refused() { ctl -o json get too-big | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["unplaced_reason"] else 1)'; }
within 30 refused
ctl get too-big
ctl -o json get too-big | python3 -c '
import json, sys
a = json.load(sys.stdin)
sq = [p for p in a["pes"] if p["pe"].startswith("square@")][0]
assert sq["worker"] == "", "placed on " + sq["worker"]
why = a["unplaced_reason"]
assert "square@" in why and "200000 MiB" in why, why
print("not placed, as it must not be:", why)'
echo "== GPU check passed"
