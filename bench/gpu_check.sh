#!/usr/bin/env bash
# Stages IV and V on one NVIDIA GPU next to PyTorch doing the same jobs.
#
# On a fresh machine (no project venv): creates a virtualenv, installs
# tensorflow[and-cuda], torch, transformers (and the project's small runtime
# needs), checks that both frameworks see the GPU, then runs, each as a
# whole process:
#   stage IV  extract_teacher_labels_truncated.py, XLA on and off, and
#             --precision=mixed_bfloat16 with XLA on
#             (one GPU: the stage's default strategy, one device),
#             next to bench/torch_teacher_labels.py, float32 and bfloat16;
#   stage V   distill.py, float32 and mixed_bfloat16 x XLA on and off x
#             one_device and mirrored,
#             next to bench/torch_distill.py, float32 and bfloat16,
# all on the same generated records (BERT-Base teacher, 6x768 student,
# L 128, P 20, k 10, batch 32), and prints one table: sequences/s or
# examples/s, peak GPU memory (nvidia-smi sampled every 200 ms; TensorFlow
# with memory growth so it takes what it needs), and whether the GPU was
# used (nvidia-smi utilisation > 0 during the run). Jobs that would pass the
# time budget (default 8 minutes for the runs) are reported as skipped.
#
#   bash bench/gpu_check.sh                  # on the GPU machine
#   bash bench/gpu_check.sh --cpu_dry_run    # here: tiny sizes on the CPU,
#        every step but the GPU checks, with an existing venv (.venv-bench)
#
# Options: --venv DIR (default .venv-gpu; --cpu_dry_run: .venv-bench),
#          --budget SECONDS (default 480), --work_dir DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
VENV=""
BUDGET=480
WORK=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu_dry_run) DRY_RUN=1 ;;
    --venv) VENV="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --work_dir) WORK="$2"; shift ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $DRY_RUN == 1 ]]; then
  VENV="${VENV:-$ROOT/.venv-bench}"
  DEVICE=cpu
  # Tiny: 2 layers x hidden 64, vocab 1000; the same code paths.
  LAYERS=2; HIDDEN=64; HEADS=2; INTERMEDIATE=128; VOCAB=1000
  RECORDS=64; STEPS=6; LOOP=3
else
  VENV="${VENV:-$ROOT/.venv-gpu}"
  DEVICE=cuda
  LAYERS=12; HIDDEN=768; HEADS=12; INTERMEDIATE=3072; VOCAB=30522
  RECORDS=2048; STEPS=60; LOOP=20
fi
STUDENT_LAYERS=$(( LAYERS / 2 ))
BATCH=32
WORK="${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$WORK"
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
PY="$VENV/bin/python"
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*"; }

# ------------------------------------------------------------- install
INSTALL_START=$SECONDS
if [[ ! -x "$PY" ]]; then
  [[ $DRY_RUN == 1 ]] && { echo "error: --cpu_dry_run needs an existing venv: $VENV (make bench-env)" >&2; exit 2; }
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [[ $DRY_RUN == 0 ]]; then
  log "installing tensorflow[and-cuda], torch, transformers"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "tensorflow[and-cuda]" torch transformers \
      numpy absl-py google-crc32c
fi
log "install: $(( SECONDS - INSTALL_START )) s"

# ------------------------------------------------------- the GPU is there
"$PY" - "$DEVICE" <<'EOF'
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
import torch
device = sys.argv[1]
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}: GPUs {gpus}; built with CUDA "
      f"{tf.test.is_built_with_cuda()}")
print(f"PyTorch {torch.__version__}: cuda available {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
if device == "cuda" and not (gpus and torch.cuda.is_available()):
  sys.exit("error: a framework does not see the GPU (see above)")
EOF
if [[ $DRY_RUN == 0 ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
"$PY" -c "import sys; sys.path.insert(0, '$ROOT/bench'); import flops; print(flops.cpu_line())"

# ---------------------------------------------------------------- data
log "writing records and the teacher in $WORK"
"$PY" - "$ROOT" "$WORK" "$RECORDS" "$LAYERS" "$HIDDEN" "$HEADS" \
    "$INTERMEDIATE" "$VOCAB" "$STUDENT_LAYERS" <<'EOF'
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
root, work = sys.argv[1], sys.argv[2]
records, layers, hidden, heads, intermediate, vocab, student_layers = (
    int(a) for a in sys.argv[3:])
sys.path[:0] = [root, os.path.join(root, "bench")]
import bench_teacher_labels as b
import flops
config = dict(flops.BERT_BASE, num_hidden_layers=layers, hidden_size=hidden,
              num_attention_heads=heads, intermediate_size=intermediate,
              vocab_size=vocab)
b.write_teacher(work, config)
b.write_inputs(work, "records",
               b.make_examples(records, [b.MAX_SEQ_LENGTH], vocab))
with open(os.path.join(work, "student_config.json"), "w") as f:
  json.dump(dict(config, num_hidden_layers=student_layers), f)
EOF

# ------------------------------------------------------------- one job
# run_job NAME KIND CMD...: runs CMD with the GPU sampled, appends a row.
# KIND: iv-ours, iv-torch, v-ours, v-torch (how to read the rate).
run_job() {
  local name="$1" kind="$2"; shift 2
  local elapsed=$(( SECONDS - RUNS_START ))
  if (( elapsed > BUDGET )); then
    printf '%s\t%s\tskipped (budget)\t-\t-\t-\n' "$name" "$kind" >> "$RESULTS"
    log "$name: skipped, the budget of $BUDGET s is spent"
    return
  fi
  local out="$WORK/$name.out" smi="$WORK/$name.smi" sampler=""
  if [[ $DRY_RUN == 0 ]]; then
    nvidia-smi --query-gpu=memory.used,utilization.gpu \
        --format=csv,noheader,nounits -lms 200 > "$smi" &
    sampler=$!
  fi
  local start=$SECONDS status=0
  timeout $(( BUDGET - elapsed + 60 )) "$@" > "$out" 2>&1 || status=$?
  local wall=$(( SECONDS - start ))
  [[ -n "$sampler" ]] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null || true
  local rate memory used
  rate="$("$PY" - "$kind" "$out" "$BATCH" <<'EOF'
import json, re, sys
kind, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(path, errors="replace").read()
rate = None
if kind == "iv-ours":
  found = re.findall(r"([\d.]+) records/s", text)
  rate = found[-1] if found else None
elif kind == "v-ours":
  found = re.findall(r"step \d+/\d+: .*?([\d.]+) examples/s", text)
  rate = found[-1] if found else None  # the last loop call: steady state
else:
  lines = [l for l in text.splitlines() if l.startswith("{")]
  if lines:
    answer = json.loads(lines[-1])
    if kind == "iv-torch":
      rate = f"{answer['steady_sequences_per_second']:.1f}"
    else:
      steps = answer["step_seconds"]
      tail = steps[len(steps) // 3:]  # after warm-up
      rate = f"{batch * len(tail) / sum(tail):.1f}"
print(rate or "n/a")
EOF
)"
  if [[ -n "$sampler" && -s "$smi" ]]; then
    memory="$(awk -F', ' 'NR==1{base=$1} {if ($1>max) max=$1} END{print max-base}' "$smi") MB"
    used="$(awk -F', ' '{if ($2>max) max=$2} END{print (max>0 ? "yes (" max "%)" : "NO")}' "$smi")"
  else
    memory="n/a (cpu)"; used="n/a (cpu)"
  fi
  [[ $status != 0 ]] && rate="FAILED ($status, see $out)"
  printf '%s\t%s\t%s\t%s s\t%s\t%s\n' "$name" "$kind" "$rate" "$wall" \
      "$memory" "$used" >> "$RESULTS"
  log "$name: rate $rate, ${wall} s, GPU memory $memory, GPU used $used"
}

# ---------------------------------------------------------------- runs
RUNS_START=$SECONDS
export TF_FORCE_GPU_ALLOW_GROWTH=true TF_CPP_MIN_LOG_LEVEL=2
TEACHER=(--bert_config_file="$WORK/bert_config.json"
         --init_checkpoint="$WORK/teacher/model.ckpt-0"
         --input_file="$WORK/records.tfrecord" --truncation_factor=10
         --batch_size=$BATCH)
run_job "iv_ours_xla" iv-ours "$PY" "$ROOT/extract_teacher_labels_truncated.py" \
    "${TEACHER[@]}" --output_file="$WORK/labels.tfrecord" --use_xla=true
run_job "iv_ours_noxla" iv-ours "$PY" "$ROOT/extract_teacher_labels_truncated.py" \
    "${TEACHER[@]}" --output_file="$WORK/labels_noxla.tfrecord" --use_xla=false
run_job "iv_ours_bf16_xla" iv-ours "$PY" "$ROOT/extract_teacher_labels_truncated.py" \
    "${TEACHER[@]}" --output_file="$WORK/labels_bf16.tfrecord" --use_xla=true \
    --precision=mixed_bfloat16
for precision in float32 bfloat16; do
  run_job "iv_torch_$precision" iv-torch "$PY" "$ROOT/bench/torch_teacher_labels.py" \
      --weights="$WORK/weights.npz" --bert_config_file="$WORK/bert_config.json" \
      --input_file="$WORK/records.tfrecord" \
      --output_file="$WORK/torch_labels_$precision.tfrecord" \
      --batch_size=$BATCH --truncation_factor=10 --device=$DEVICE \
      --precision=$precision
done
[[ -s "$WORK/labels.tfrecord" ]] || { echo "error: stage IV wrote no labels" >&2; exit 1; }

for precision in float32 mixed_bfloat16; do
  for xla in true false; do
    for strategy in one_device mirrored; do
      run_job "v_ours_${precision}_xla-${xla}_${strategy}" v-ours \
          "$PY" "$ROOT/distill.py" --bert_config_file="$WORK/student_config.json" \
          --input_file="$WORK/labels.tfrecord" \
          --output_dir="$WORK/student_${precision}_${xla}_${strategy}" \
          --do_train --num_train_steps=$STEPS --num_warmup_steps=1 \
          --iterations_per_loop=$LOOP --train_batch_size=$BATCH \
          --precision=$precision --use_xla=$xla \
          --distribution_strategy=$strategy
    done
  done
done
for precision in float32 bfloat16; do
  run_job "v_torch_$precision" v-torch "$PY" "$ROOT/bench/torch_distill.py" \
      --bert_config_file="$WORK/student_config.json" \
      --input_file="$WORK/labels.tfrecord" --output_dir="$WORK/torch_$precision" \
      --num_train_steps=$STEPS --train_batch_size=$BATCH --device=$DEVICE \
      --precision=$precision
done

# --------------------------------------------------------------- table
echo
echo "gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE, runs took $(( SECONDS - RUNS_START )) s (budget $BUDGET s)"
echo "rate: stage IV sequences/s (ours: the stage's own progress rate, start-up excluded, compiles included;"
echo "      PyTorch: batches after the first); stage V examples/s of the last loop call (ours) or the last 2/3 of the steps (PyTorch)"
{
  printf 'job\tkind\trate\twall\tpeak GPU memory\tGPU used\n'
  cat "$RESULTS"
} | column -t -s $'\t'
if grep -q FAILED "$RESULTS"; then
  echo "error: some jobs failed (see their .out files in $WORK)" >&2
  exit 1
fi
