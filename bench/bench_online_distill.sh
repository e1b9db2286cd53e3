#!/bin/bash
# The cost of the teacher in the loop, and a short run of each preset.
#
# Reads a finished demo (`make demo`; demo_output by default): its
# pretraining records (III-b) and its teacher with the fitted MLM head (T,
# all-MiniLM-L6-v2: its bert_config.json is the one stage T wrote); labels
# the training records top-10 with stage IV (the demo's own labels are
# sampled) for the offline run. Trains the same student (the demo's: 3 x 384
# from the teacher's layers 0, 2, 4; STUDENT_CONFIG, LAYER_MAP and
# LEARNING_RATE change it)
#   offline: distill.py on stored top-10 labels (the original's stage V);
#   online:  distill.py with --teacher_config/--teacher_checkpoint on the
#            plain records (soft loss on the teacher's full distribution);
#   and one run of each --preset,
# each for STEPS steps from the same seed, evaluates every student on the
# held-out file with the teacher in the loop (masked_lm_loss is then the
# cross-entropy against the teacher's full distribution, H(t) + KL(t || q)),
# and evaluates the teacher itself the same way for H(t), so that
# teacher_kl = masked_lm_loss - H(t) exactly.
#
# Prints one line a run: examples/s (the median of the loop's log lines
# after the first), peak RSS (GNU time), held-out masked_lm_accuracy,
# teacher_top1_agreement and teacher_kl.
#
#   bench/bench_online_distill.sh [demo_output] [steps]
#   ROUNDS=3 PRESETS= bench/bench_online_distill.sh demo_output 300  # cost only
#   EXTRA='--next_sentence_loss_weight=1' PRESETS=distilbert SUFFIX=_nsp ...
#       # every training run gets EXTRA's flags; SUFFIX names its runs
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${1:-demo_output}
STEPS=${2:-300}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
PYTHON=${PYTHON:-.venv/bin/python}
TEACHER_CONFIG="$DEMO/teacher/bert_config.json"
TEACHER=(--teacher_config="$TEACHER_CONFIG"
         --teacher_checkpoint="$DEMO/teacher")
COMMON=(--bert_config_file="${STUDENT_CONFIG:-data/student_L3_H384_bert_config.json}"
        --init_checkpoint="$DEMO/teacher" --init_layer_map="${LAYER_MAP:-0,2,4}"
        --max_seq_length=64 --max_predictions_per_seq=10
        --train_batch_size=32 --eval_batch_size=32 --max_eval_steps=20
        --learning_rate="${LEARNING_RATE:-1e-4}" --num_train_steps="$STEPS"
        --num_warmup_steps=$((STEPS / 10)) --iterations_per_loop=50
        --save_checkpoints_steps="$STEPS" --seed=12345)
held_out() { echo "$DEMO/$1/pretraining_data_3.tfrecord"; }
train_files() {
  echo "$DEMO/$1/pretraining_data_0.tfrecord,$DEMO/$1/pretraining_data_1.tfrecord,$DEMO/$1/pretraining_data_2.tfrecord"
}

# run NAME ARGS...: train, logging to $WORK/NAME.log, peak RSS via GNU time.
run() {
  local name=$1
  shift
  /usr/bin/time -f "peak_rss_kb %M" "$PYTHON" distill.py --do_train \
      --output_dir="$WORK/$name" "${COMMON[@]}" "$@" ${EXTRA:-} \
      > "$WORK/$name.log" 2>&1
}

# evaluate NAME: held-out metrics with the teacher in the loop.
evaluate() {
  "$PYTHON" distill.py --do_eval --output_dir="$WORK/$1" "${COMMON[@]}" \
      --input_file="$(held_out records)" --eval_input_file="$(held_out records)" \
      "${TEACHER[@]}" > "$WORK/$1.eval.log" 2>&1
}

value() { sed -n "s/^$2 = //p" "$WORK/$1/eval_results.txt"; }

report() {
  local name=$1 entropy=$2
  local rate rss
  rate=$(grep -o '[0-9.]* examples/s' "$WORK/$name.log" | tail -n +2 |
         awk '{print $1}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  rss=$(sed -n 's/^peak_rss_kb //p' "$WORK/$name.log")
  printf '%-18s %8s examples/s %6d MB peak RSS  mlm_acc %.4f  top1_agree %.4f  teacher_kl %.4f\n' \
      "$name" "$rate" $((rss / 1024)) "$(value "$name" masked_lm_accuracy)" \
      "$(value "$name" teacher_top1_agreement)" \
      "$(echo "$(value "$name" masked_lm_loss) - $entropy" | bc -l)"
}

echo "bench_online_distill: $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); work in $WORK" >&2
# H(t): the teacher evaluated against itself.
"$PYTHON" distill.py --do_eval --output_dir="$WORK/teacher_itself" \
    "${COMMON[@]}" --bert_config_file="$TEACHER_CONFIG" --init_layer_map= \
    --init_checkpoint="$DEMO/teacher" --input_file="$(held_out records)" \
    --eval_input_file="$(held_out records)" "${TEACHER[@]}" \
    > "$WORK/teacher_itself.log" 2>&1
ENTROPY=$(value teacher_itself masked_lm_loss)
echo "teacher entropy H(t) on the held-out file: $ENTROPY" >&2

# The offline run's top-10 labels, made once per work folder.
if [ "${ROUNDS:-1}" -gt 0 ] && [ ! -d "$WORK/top10_labels" ]; then
  "$PYTHON" extract_teacher_labels_truncated.py \
      --bert_config_file="$TEACHER_CONFIG" \
      --init_checkpoint="$DEMO/teacher" --input_file="$(train_files records)" \
      --output_dir="$WORK/top10_labels.tmp" --max_seq_length=64 \
      --max_predictions_per_seq=10 --label_mode=top_k --truncation_factor=10 \
      > "$WORK/top10_labels.log" 2>&1
  mv "$WORK/top10_labels.tmp" "$WORK/top10_labels"
fi
top10_files() {
  echo "$WORK/top10_labels/pretraining_data_0.tfrecord,$WORK/top10_labels/pretraining_data_1.tfrecord,$WORK/top10_labels/pretraining_data_2.tfrecord"
}

# ROUNDS > 1: offline and online alternate, so that both see the same load.
NAMES=()
for round in $(seq "${ROUNDS:-1}"); do
  suffix=$([ "${ROUNDS:-1}" -gt 1 ] && echo "_$round" || true)${SUFFIX:-}
  run "offline_top10$suffix" --input_file="$(top10_files)" \
      --truncation_factor=10
  run "online_full$suffix" --input_file="$(train_files records)" "${TEACHER[@]}"
  NAMES+=("offline_top10$suffix" "online_full$suffix")
done
for preset in ${PRESETS-distilbert tinybert_general minilm}; do
  run "$preset${SUFFIX:-}" --input_file="$(train_files records)" "${TEACHER[@]}" --preset="$preset"
  NAMES+=("$preset${SUFFIX:-}")
done
for name in "${NAMES[@]}"; do
  evaluate "$name"
  report "$name" "$ENTROPY"
done
