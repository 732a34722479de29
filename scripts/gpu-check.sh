#!/usr/bin/env bash
# The GPU check: what lstmbench's GPU path does on a real GPU, in at most 6 minutes, for a machine with one GPU
# and lstmbench's dependencies installed (no network: it runs `python3 -m lstmbench` from this tree).
#
#   scripts/gpu-check.sh OUT        # OUT: a folder for gpu-check.log, probe.json, rows.jsonl, summary.txt
#
# Steps, in order of what matters most (each with its own time limit; a step whose limit no longer fits in the
# budget is skipped and says so, so train.compile goes first): the probes (host synchronisations per step per
# readout and amp, the LSTM's dtype per amp, event timing against torch.cuda._sleep), the CUDA tests (an oom row
# named as its ok rows among them), verify on a small CUDA suite, suites/gpu.yaml scaled down through the
# forkserver with 2 pinned workers (bf16), fp16, a bidirectional tagging suite, DDP with one NCCL rank, and
# train.compile. Every row lands in OUT/rows.jsonl; summary.txt has one line a step. See docs/gpu-and-ci.md.
set -uo pipefail
OUT=${1:?usage: scripts/gpu-check.sh OUT}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-360}  # the whole check; the GPU machine is lent by the minute
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$(mktemp -d)  # per-suite folders; their rows are gathered into OUT/rows.jsonl at the end
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/gpu-check.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
BEGAN=$(date +%s)
cd "$ROOT" || exit 2

# step NAME LIMIT_S COMMAND...: run it with its limit if the budget still holds that limit; one summary line
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - BEGAN)))
    if [ "$left" -lt "$limit" ]; then
        echo "$name: skipped (${left}s of the budget left, the step needs up to ${limit}s)" | tee -a "$SUMMARY"
        return
    fi
    echo "=== $name (limit ${limit}s): $*" >>"$LOG"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local code=$?
    local took=$(($(date +%s) - t0))
    local verdict=$([ "$code" -eq 0 ] && echo ok || { [ "$code" -eq 124 ] && echo "timed out" || echo "failed (exit $code)"; })
    echo "$name: $verdict in ${took}s" | tee -a "$SUMMARY"
}

{
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
} | tee -a "$SUMMARY"
"$PY" scripts/check-gpu.py >>"$LOG" 2>&1 || { echo "torch sees no GPU: nothing to check" | tee -a "$SUMMARY"; exit 2; }

LB=("$PY" -m lstmbench)
SMALL=(--set seeds=[0] --set data.train_size=4096 --set data.eval_size=512 --set train.eval_every=0)

step probes 60 bash -c "\"$PY\" scripts/gpu_probe.py >\"$OUT/probe.json\""
step cuda-tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_step_path.py -k "cuda" \
    --junit-xml="$WORK/junit.xml"
step verify 60 "${LB[@]}" verify suites/gpu.yaml --set data.train_size=1024 --set data.eval_size=128
step gpu-suite 90 "${LB[@]}" run suites/gpu.yaml "${SMALL[@]}" --out "$RESULTS"
step fp16 40 "${LB[@]}" run suites/gpu.yaml "${SMALL[@]}" --set train.amp=fp16 \
    --set 'strategies=[mask, bucket]' --out "$RESULTS"
step bidirectional-tag 45 "${LB[@]}" run suites/bidir.yaml --device cuda --set seeds=[0] --set data.task=tag \
    --set 'strategies=[naive, mask, pack]' --set train.loader.workers=2 --set train.loader.pin_memory=true \
    --out "$RESULTS"
cat >"$WORK/ddp1.yaml" <<'EOF'
name: ddp-nccl-1
description: one NCCL rank under torchrun, the nightly's DDP path at its smallest
device: cuda
seeds: [0]
data: {source: synthetic, train_size: 2048, eval_size: 256, lengths: {dist: lognormal, median: 40, sigma: 1.0, min: 4, max: 400}}
model: {embed_dim: 32, hidden_size: 64}
train: {batch_size: 32, epochs: 1, lr: 0.003, warmup_steps: 5}
launch: {nproc: 1, backend: nccl}
strategies: [mask, bucket]
EOF
step ddp-nccl 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node=1 -m lstmbench run "$WORK/ddp1.yaml" \
    --out "$RESULTS"
step compile 90 "${LB[@]}" run suites/gpu.yaml "${SMALL[@]}" --set train.compile=true \
    --set 'strategies=[mask, bucket]' --out "$RESULTS"

find "$RESULTS" -name '*.jsonl' -print0 | sort -z | xargs -0 cat >"$OUT/rows.jsonl" 2>/dev/null
echo "rows: $(wc -l <"$OUT/rows.jsonl") in $OUT/rows.jsonl; took $(($(date +%s) - BEGAN))s" | tee -a "$SUMMARY"
rm -rf "$RESULTS"
! grep -qE ": (failed|timed out)" "$SUMMARY"
