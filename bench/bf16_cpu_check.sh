#!/usr/bin/env bash
# Issue 21's CPU bfloat16 goals in one run, sized to fit a few minutes on a
# many-core machine: stage IV (bench_teacher_labels.py) and stage V
# (bench_distill.py), float32 and mixed_bfloat16, next to PyTorch float32 and
# bfloat16 autocast, each bench printing the CPU model, its bf16/AMX flags and
# the float32 and bfloat16 GEMM rates measured in the same run.
#
#   bash bench/bf16_cpu_check.sh                 # BERT-Base teacher, 6x768 student
#   bash bench/bf16_cpu_check.sh --quick         # 2 layers: checks the wiring
#
# Options: --python PY (TensorFlow side; default .venv/bin/python),
#          --bench_venv DIR (holds bin/python with torch; default .venv-bench),
#          --log_dir DIR (each bench's output is also written there),
#          --stage_timeout SECONDS (each bench stopped after that; default none).
# On a CPU without bf16 units the bf16 rows are slower than float32: the
# goals are for CPUs with amx_bf16 or avx512_bf16 (see docs/performance.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
BENCH_VENV="$ROOT/.venv-bench"
LOG_DIR=""
QUICK=0
STAGE_TIMEOUT=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PY="$2"; shift ;;
    --bench_venv) BENCH_VENV="$2"; shift ;;
    --log_dir) LOG_DIR="$2"; shift ;;
    --quick) QUICK=1 ;;
    --stage_timeout) STAGE_TIMEOUT="$2"; shift ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/bf16_cpu_check.XXXXXX)}"
mkdir -p "$LOG_DIR"
if [[ $QUICK == 1 ]]; then
  IV_SIZE=(--layers=2 --num_examples=32 --steady_rounds=1)
  V_SIZE=(--layers=1 --batch_size=4 --seq_length=32 --predictions=5
          --steady_rounds=1 --steps_per_round=1 --warmup_steps=1)
else
  IV_SIZE=(--num_examples=160 --steady_rounds=2)
  V_SIZE=(--steady_rounds=2)
fi

say() { echo "[bf16_cpu_check $(date -u +%H:%M:%S)] $*"; }
# run_bench NAME LOG SCRIPT ARGS...: one bench under --stage_timeout, its
# output also in LOG_DIR/LOG; a failed or stopped bench is reported and the
# next one still runs.
run_bench() {
  local name="$1" log="$2"; shift 2
  timeout "$STAGE_TIMEOUT" "$PY" "$@" 2>&1 | tee "$LOG_DIR/$log" ||
    say "$name bench ended with status $? (124: its --stage_timeout)"
}

say "stage IV: float32 and mixed_bfloat16 next to PyTorch (autocast for bf16)"
run_bench "stage IV" stage_iv.log "$ROOT/bench/bench_teacher_labels.py" \
    --lengths=full --rounds=1 --precisions=float32,mixed_bfloat16 \
    --bench_venv="$BENCH_VENV" "${IV_SIZE[@]}"

say "stage V: steady state, float32 and mixed_bfloat16 next to PyTorch"
run_bench "stage V" stage_v.log "$ROOT/bench/bench_distill.py" --rounds=0 \
    --jobs=tf_graph,tf_graph_bf16,torch,torch_bf16 \
    --bench_venv="$BENCH_VENV" "${V_SIZE[@]}"
say "done; logs in $LOG_DIR"
