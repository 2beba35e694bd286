#!/usr/bin/env bash
# One GPU check run: the GPU tests, the Triton kernel compiled for real, and the attention, training-step and
# sampling benchmarks, each as JSON, within a time budget (default 480 s: it fits 8 minutes on one H200).
#
#   benchmarks/gpu_check.sh [--dry-run] [--budget SECONDS] [--out DIR] [--only STEP,STEP]
#
# Steps, in order (each under `timeout`, capped by what is left of the budget; a step that would start with under
# 30 s left is skipped, so the run stops cleanly at its limit with what it has):
#   env              the machine and the Python packages jam-flow imports
#   pytest_gpu       pytest -m gpu (fused/flex vs reference in bf16/fp16, half-precision LivePortrait)
#   triton_compiled  tests/interpreted/attention_triton_cases.py compiled by Triton (no interpreter)
#   attention        benchmarks/attention.py: floor (FlashAttention over audio alone), reference (dense masked SDPA),
#                    fused (Triton), flex (BlockMask) at 5/20/60 s, bf16, 16 x 64 heads, fwd and fwd+bwd
#   train_step       benchmarks/train_step.py: paper size, bf16-mixed, batch 10 x 20 s (stage-2 config: 19200 mel
#                    frames per GPU), activation checkpointing off and on
#   sample           benchmarks/sample.py: paper size, 20 s, 32 NFE, batched CFG, torch.compile off and on, plus a
#                    random Vocos of the published size (end to end)
# Results: DIR/<step>_cuda.json, DIR/gpu_check.json (machine, every step's status and time) and DIR/gpu_check.log.
# DIR defaults to benchmarks/results.
#
# --dry-run (or GPU_CHECK_DRY_RUN=1): the same steps on the CPU at tiny sizes (pytest steps only collect), results
# in a temporary folder unless --out is given; tested in CI (tests/test_gpu_check.py).
# Wheels: when .whl/*.whl exist (packages missing on the GPU machine, see docs/attention.md), they are installed
# into /tmp/site first and put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=${GPU_CHECK_DRY_RUN:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
OUT=${GPU_CHECK_OUT:-}
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget) BUDGET=$2; shift ;;
        --out) OUT=$2; shift ;;
        --only) ONLY=$2; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "error: gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if [ "$DRY" = 1 ]; then DEVICE=cpu; SUFFIX=cpu_dry; OUT=${OUT:-$(mktemp -d)}; else DEVICE=cuda; SUFFIX=cuda; OUT=${OUT:-benchmarks/results}; fi
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
STEPS=$(mktemp)
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >> "$LOG" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
START=$(date +%s)
DEADLINE=$((START + BUDGET))

say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

finish() {
    "$PY" benchmarks/gpu_check_report.py summary "$STEPS" "$OUT/gpu_check.json" "$DEVICE" "$DRY" "$BUDGET" >> "$LOG" 2>&1
    say "done in $(( $(date +%s) - START )) s; summary: $OUT/gpu_check.json"
    cut -f1-4 "$STEPS" | tee -a "$LOG"
    rm -f "$STEPS"
}
trap 'say "stopped by a signal"; finish; exit 143' TERM INT

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# step NAME CAP_S RESULT_JSON -- COMMAND...: run COMMAND under `timeout` (the cap or what is left of the budget)
step() {
    local name=$1 cap=$2 result=$3; shift 4
    wanted "$name" || return 0
    local left=$((DEADLINE - $(date +%s) - 15))  # 15 s kept for the summary
    if [ "$left" -lt 15 ]; then
        printf '%s\tskipped\t\t0\t-\tno time left in the %s s budget\n' "$name" "$BUDGET" >> "$STEPS"
        say "$name: skipped (no time left)"
        return 0
    fi
    local limit=$(( cap < left ? cap : left )) t0=$(date +%s) rc status
    say "$name: start (limit ${limit} s): $*"
    timeout --kill-after=5 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
    if [ "$result" != - ] && [ ! -s "$result" ]; then result=-; fi
    printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$result" >> "$STEPS"
    say "$name: $status (exit $rc, $(( $(date +%s) - t0 )) s)"
}

# pytest as a step, its JUnit report turned into RESULT_JSON (also after a failure or a timeout)
pytest_step() {
    local name=$1 cap=$2 result=$3; shift 3
    wanted "$name" || return 0
    local xml=$OUT/.$name.xml
    local collect=(); if [ "$DRY" = 1 ]; then collect=(--collect-only); fi
    step "$name" "$cap" - -- "$PY" -m pytest -q -p no:cacheprovider -W ignore::UserWarning "${collect[@]}" \
        --junitxml="$xml" "$@"
    "$PY" benchmarks/gpu_check_report.py junit "$xml" "$result" "$name" >> "$LOG" 2>&1 && rm -f "$xml"
    # record where the JSON went (the step line was written with "-")
    sed -i "\$s|\t-\t\$|\t$result\t|" "$STEPS"
}

IMPORTS="import torch, jam_flow.models, jam_flow.flow.sampler, jam_flow.nn.attention, jam_flow.inference.tasks, \
jam_flow.data.vocoder, jam_flow.liveportrait; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step env 60 - -- bash -c "nvidia-smi 2>/dev/null || echo 'no nvidia-smi'; \"$PY\" -c \"$IMPORTS\""

if [ "$DRY" = 1 ]; then
    pytest_step pytest_gpu 60 "$OUT/pytest_gpu_$SUFFIX.json" -m gpu tests/test_attention_gpu.py
    pytest_step triton_compiled 60 "$OUT/triton_compiled_$SUFFIX.json" tests/interpreted/attention_triton_cases.py
    step attention 120 "$OUT/attention_$SUFFIX.json" -- "$PY" benchmarks/attention.py --device cpu --seconds 0.5 \
        --reps 1 --backends floor fused --json "$OUT/attention_$SUFFIX.json"
    step train_step 120 "$OUT/train_step_$SUFFIX.json" -- "$PY" benchmarks/train_step.py --device cpu --size tiny \
        --seconds 1 --batch 2 --reps 1 --checkpointing off on --json "$OUT/train_step_$SUFFIX.json"
    step sample 120 "$OUT/sample_$SUFFIX.json" -- "$PY" benchmarks/sample.py --device cpu --size tiny --seconds 1 \
        --nfe 4 --reps 1 --backend auto --compile off --vocoder --json "$OUT/sample_$SUFFIX.json"
else
    pytest_step pytest_gpu 75 "$OUT/pytest_gpu_$SUFFIX.json" -m gpu tests/
    pytest_step triton_compiled 75 "$OUT/triton_compiled_$SUFFIX.json" tests/interpreted/attention_triton_cases.py
    step attention 100 "$OUT/attention_$SUFFIX.json" -- "$PY" benchmarks/attention.py --device cuda \
        --seconds 5 20 60 --dtype bfloat16 --reps 5 --backends floor reference fused flex \
        --json "$OUT/attention_$SUFFIX.json"
    step train_step 100 "$OUT/train_step_$SUFFIX.json" -- "$PY" benchmarks/train_step.py --device cuda \
        --size paper --seconds 20 --batch 10 --reps 3 --checkpointing off on --json "$OUT/train_step_$SUFFIX.json"
    step sample 100 "$OUT/sample_$SUFFIX.json" -- "$PY" benchmarks/sample.py --device cuda --size paper \
        --seconds 20 --nfe 32 --reps 3 --backend auto --compile off on --vocoder --json "$OUT/sample_$SUFFIX.json"
fi
finish
