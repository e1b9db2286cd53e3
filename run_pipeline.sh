#!/usr/bin/env bash
# The whole pipeline, from a Wikipedia dump to a distilled student:
#
#   II    extract      dump -> one sentence per line  (extract_wikipedia_for_bert/)
#   III-a split        text -> SPLIT_NUMBER text files (split_text.py)
#   III-b records      text files -> pretraining tfrecords
#                                   (multifile_create_pretraining_data.py)
#   T     teacher      optional: fit an MLM head onto an encoder-only teacher
#                      (TEACHER_HEAD_STEPS: a sentence-transformers model
#                      has none, stage IV needs one), or pretrain a teacher
#                      when none is at hand (TEACHER_PRETRAIN_STEPS)
#                      (distill.py, hard labels only)
#   IV    labels       records -> records + the teacher's labels (LABEL_MODE;
#                      the held-out files in full mode, for teacher_kl)
#                                   (extract_teacher_labels_truncated.py)
#   V     distill      teacher labels -> student checkpoints, eval_results.txt
#                      (with teacher_kl on the held-out files) (distill.py)
#   G     downstream   optional (--glue_task): fine-tune and score the teacher
#                      and the student on a GLUE-layout task (run_classifier.py);
#                      with --glue_task_distillation also task-distil the
#                      student from the fine-tuned teacher
#
# Usage:
#   ./run_pipeline.sh --dump=enwiki-latest-pages-articles.xml.bz2 \
#       --teacher_dir=uncased_L-12_H-768_A-12 \
#       --student_config=student_bert_config.json --work_dir=wiki_run
#
# Every setting below is an environment variable of the same name in upper
# case, or a flag --name=value (or --name value) in lower case; flags win.
# Run with --help for the list and the defaults. A value that is not of its
# setting's kind, settings that conflict (exit 2) and a missing input of an
# asked-for stage that no earlier stage of the run makes (exit 1) stop the
# run with one line before its first stage, before anything is written.
#
# Each stage writes WORK_DIR/stages/<stage>.done when it succeeds, holding its
# command line, the markers of the stages it read from, and the size and
# modification time (to the nanosecond) of every file it read (the dump, the
# text file, the split text files, the records, the teacher's config,
# checkpoint files and vocabulary, the labels, --init_checkpoint's files, the
# GLUE task's files). A rerun skips a stage whose marker
# matches; a stage that crashed is run again, and the stages themselves skip
# the files they had finished. A stage whose marker differs (settings
# changed, an input rewritten) stops the pipeline with a message: delete that
# stage's output and marker to redo it, or restore the settings.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# name|default|meaning: the one list of settings (flags and variables).
SETTINGS=(
  "python|python|Python interpreter with requirements.txt installed"
  "work_dir|pipeline_output|Folder of every output and of the stage markers"
  "stages|II,III-a,III-b,T,IV,V,G|Stages to run, comma-separated (always in the order II, III-a, III-b, T, IV, V, G)"
  "dump||II: the Wikipedia dump (*-pages-articles*.xml.bz2)"
  "extract_dir|\$WORK_DIR/extracted|II: WikiExtractor's output folder"
  "text_file|\$WORK_DIR/wiki.txt|II: the text file (give an existing one and stages: III-a,... to start from text)"
  "processes|\$(nproc)|II: WikiExtractor and extract_jsons.py processes"
  "split_number|10|III-a: number of text files"
  "split_dir|\$WORK_DIR/text|III-a: their folder"
  "name_base|text|III-a: their name: NAME_BASE_N.txt"
  "records_dir|\$WORK_DIR/records|III-b: pretraining records folder"
  "output_base_name|pretraining_data|III-b: record file names: OUTPUT_BASE_NAME_N.tfrecord"
  "do_lower_case|true|III-b: lower-case and strip accents (uncased vocabulary)"
  "max_seq_length|128|III-b, T, IV, V: tokens per sequence"
  "max_predictions_per_seq|20|III-b, T, IV, V: masked positions per sequence"
  "random_seed|12345|III-b: seed (file i uses RANDOM_SEED + i)"
  "dupe_factor|10|III-b: passes over the text with different masks"
  "masked_lm_prob|0.15|III-b: fraction of tokens masked"
  "short_seq_prob|0.1|III-b: fraction of shorter sequences"
  "do_whole_word_mask|false|III-b: mask whole words"
  "num_workers|\$(nproc)|III-b: worker processes"
  "teacher_dir||Teacher folder: bert_config.json, vocab.txt, bert_model.ckpt"
  "teacher_config|\$TEACHER_DIR/bert_config.json|T, IV: the teacher's architecture"
  "vocab_file|\$TEACHER_DIR/vocab.txt|III-b, IV: the WordPiece vocabulary"
  "teacher_checkpoint|\$TEACHER_DIR/bert_model.ckpt|IV: the teacher's weights (a prefix or a folder)"
  "teacher_pretrain_steps|0|T: pretrain a teacher for this many steps into TEACHER_TRAIN_DIR and use it (0: skip T, use TEACHER_CHECKPOINT)"
  "teacher_head_steps|0|T: fit an MLM head onto TEACHER_CHECKPOINT (an encoder-only teacher, e.g. a HuggingFace folder without one) for this many steps into TEACHER_TRAIN_DIR and use that (0: skip)"
  "teacher_trainable|heads|T: with TEACHER_HEAD_STEPS: heads (the encoder frozen, bit for bit) or all (the whole teacher trained too)"
  "teacher_train_dir|\$WORK_DIR/teacher|T: the pretrained teacher's checkpoints"
  "teacher_train_batch_size|32|T: batch size"
  "teacher_learning_rate|1e-4|T: peak learning rate"
  "teacher_warmup_steps|\$(((TEACHER_PRETRAIN_STEPS + TEACHER_HEAD_STEPS) / 10))|T: warmup steps"
  "teacher_labels_dir|\$WORK_DIR/teacher_labels|IV: training records with the teacher's labels"
  "label_mode|sampled|IV: what stage IV keeps of the teacher: sampled (recommended: see docs/label_modes.md), top_k (the original's) or full"
  "truncation_factor|20|IV: k, teacher probabilities (top_k) or distinct sampled ids (sampled) kept per masked position (0 with top_k: all)"
  "num_samples|32|IV: sampled: draws per masked position"
  "label_seed|12345|IV: sampled: seed of the draws"
  "holdout_files|1|IV, V: last record files held out for evaluation, labelled in full mode (0: evaluate on the training files)"
  "heldout_labels_dir|\$WORK_DIR/teacher_labels_held_out|IV: the held-out records with the teacher's whole distribution"
  "teacher_batch_size|32|IV: batch size"
  "num_shards|1|IV: split the records among this many machines..."
  "shard_index|0|IV: ...of which this is one (run IV on each, then V on one)"
  "student_config||V: the student's bert_config.json"
  "student_dir|\$WORK_DIR/student|V: student checkpoints, summaries, eval_results.txt"
  "init_checkpoint||V: initial student weights, e.g. the teacher's"
  "init_layer_map||V: with INIT_CHECKPOINT, teacher layer of each student layer (e.g. 0,2,4,7,9,11)"
  "train_batch_size|32|V: global batch size"
  "eval_batch_size|8|V: evaluation batch size"
  "learning_rate|1e-4|V: peak learning rate"
  "num_train_steps|100000|V: training steps"
  "num_warmup_steps|10000|V: warmup steps"
  "save_checkpoints_steps|1000|V: steps between checkpoints"
  "iterations_per_loop|1000|T, V: steps inside one tf.function call (and between log lines)"
  "max_eval_steps|100|T, V: evaluation batches"
  "heldout_examples|\$((MAX_EVAL_STEPS * EVAL_BATCH_SIZE))|IV: held-out records labelled in full mode, per file (what V's evaluation reads)"
  "temperature|1|IV, V: distillation temperature (sampled labels are drawn at it)"
  "soft_loss_weight|1|V: weight of the loss against the teacher's labels"
  "hard_mlm_loss_weight|0|V: weight of the loss against the true masked ids"
  "precision|auto|T, IV, V, G (and G-distilled): compute dtype of the models: auto (mixed_bfloat16 where the CPU has AMX or AVX512-BF16 units or a GPU has bfloat16 ones, else float32: bert_distill/hardware.py), float32, mixed_bfloat16 or mixed_float16; the held-out labels are always float32"
  "distill_flags||T, V: more distill.py flags, e.g. \"--distribution_strategy=mirrored --precision=mixed_float16\""
  "label_flags||IV: more extract_teacher_labels_truncated.py flags"
  "glue_task||G: fine-tune and score teacher and student on this run_classifier.py task (sst-2, mnli, ...; empty: skip G)"
  "glue_data_dir||G: the task's folder of TSV files (train.tsv, dev.tsv, ...)"
  "glue_dir|\$WORK_DIR/glue|G: the fine-tuned teacher and student (teacher/, student/, each with eval_results.txt)"
  "glue_max_seq_length|128|G: tokens per example"
  "glue_flags||G: more run_classifier.py flags, e.g. \"--num_train_epochs=2 --learning_rate=2e-5\""
  "glue_task_distillation|false|G: also task-distil the student from the fine-tuned teacher into \$GLUE_DIR/student_distilled (run_classifier.py --teacher_checkpoint) and report both student scores"
  "glue_distill_flags||G: more flags of the task distillation run, e.g. \"--unlabeled_file=unlabeled.tsv --temperature=2 --hard_loss_weight=0.5\""
)

# The stages, in the order they run.
STAGE_NAMES=(II III-a III-b T IV V G)

# What a setting's value must be, checked with the flags, before any stage
# runs (the settings not named here are paths or free text):
#   stages    some of STAGE_NAMES, comma-separated
#   whole     a whole number, 0 or more (leading zeros are dropped: bash
#             would read 010 as octal)
#   count     a whole number, 1 or more
#   positive  a decimal number above 0 (1e-4, .5, 2)
#   number    a decimal number, 0 or more
#   fraction  a decimal number from 0 to 1
#   choice    one of CHOICES[name] (true or false for the booleans)
#   layers    none, or layer numbers separated by commas
#   glue_task none, or one of run_classifier.py's tasks (GLUE_TASKS)
declare -A KIND=([stages]=stages [init_layer_map]=layers [glue_task]=glue_task)
declare -A CHOICES=(
  [do_lower_case]="true false" [do_whole_word_mask]="true false"
  [glue_task_distillation]="true false" [teacher_trainable]="heads all"
  [label_mode]="sampled top_k full"
  [precision]="auto float32 mixed_bfloat16 mixed_float16"
)
# run_classifier.py's tasks: bert_distill/classifier_data.py's TASK_NAMES
# (tests/test_run_pipeline.py compares the two), read as get_task reads them
# (glue_task_name).
GLUE_TASKS=(cola sst-2 mrpc sts-b qqp mnli mnli-mm qnli rte wnli tsv)
set_kind() {  # set_kind KIND NAME...
  local name
  for name in "${@:2}"; do KIND[$name]=$1; done
}
set_kind whole random_seed teacher_pretrain_steps teacher_head_steps \
  teacher_warmup_steps truncation_factor label_seed holdout_files \
  shard_index num_train_steps num_warmup_steps heldout_examples
set_kind count processes split_number max_seq_length \
  max_predictions_per_seq dupe_factor num_workers teacher_train_batch_size \
  num_samples teacher_batch_size num_shards train_batch_size eval_batch_size \
  save_checkpoints_steps iterations_per_loop max_eval_steps \
  glue_max_seq_length
set_kind positive teacher_learning_rate learning_rate temperature
set_kind number soft_loss_weight hard_mlm_loss_weight
set_kind fraction masked_lm_prob short_seq_prob
for name in "${!CHOICES[@]}"; do KIND[$name]=choice; done

# The task a --task_name names, as classifier_data.get_task reads it: any
# case, _ for -, sst2 for sst-2, ...
glue_task_name() {  # glue_task_name TASK
  local key=${1,,}
  key=${key//_/-}
  case "${key//-/}" in
    sst2) key=sst-2 ;;
    stsb) key=sts-b ;;
    mnlimm) key=mnli-mm ;;
  esac
  [[ $key == mnli-m ]] && key=mnli
  echo "$key"
}

usage() {
  sed -n '2,/--work_dir=wiki_run$/p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Settings (flag --name or variable NAME, default):"
  local entry name default meaning
  for entry in "${SETTINGS[@]}"; do
    IFS='|' read -r name default meaning <<< "$entry"
    printf "  --%-26s %s\n  %-28s (default: %s)\n" "$name" "$meaning" "" "${default:-none}"
  done
}

is_setting() {
  local entry
  for entry in "${SETTINGS[@]}"; do
    [[ "${entry%%|*}" == "$1" ]] && return 0
  done
  return 1
}

is_one_of() {  # is_one_of VALUE ITEM...
  local item
  for item in "${@:2}"; do
    [[ "$1" == "$item" ]] && return 0
  done
  return 1
}

comma_list() {  # comma_list ITEM...: "a, b, c"
  local IFS=,
  local list="$*"
  echo "${list//,/, }"
}

or_list() {  # or_list ITEM...: "a, b or c"
  if [[ $# -gt 1 ]]; then
    echo "$(comma_list "${@:1:$# - 1}") or ${!#}"
  else
    echo "$1"
  fi
}

bad_setting() {  # bad_setting MESSAGE: a bad flag, one line, exit 2
  echo "run_pipeline.sh: error: $*" >&2
  exit 2
}

bad_value() {  # bad_value NAME VALUE WHY...: one line naming the flag
  bad_setting "--$1=$2: ${*:3}"
}

# check_setting NAME: stops with one line naming the flag when the value of
# NAME's variable is not of NAME's KIND.
check_setting() {
  local name=$1 var=${1^^}
  local value=${!var} kind=${KIND[$1]:-}
  case "$kind" in
    '') ;;
    whole|count)
      local least=0
      [[ $kind == count ]] && least=1
      local digits=${value#"${value%%[!0]*}"}  # without leading zeros
      [[ "$value" =~ ^[0-9]+$ && ${digits:-0} -ge $least ]] ||
        bad_value "$name" "$value" "use a whole number, $least or more"
      printf -v "$var" '%s' "${digits:-0}" ;;
    positive|number|fraction)
      local why="use a number, 0 or more"
      [[ $kind == positive ]] && why="use a number above 0"
      [[ $kind == fraction ]] && why="use a number from 0 to 1"
      [[ "$value" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$ ]] ||
        bad_value "$name" "$value" "$why"
      # Above 0: a digit other than 0 before the exponent.
      [[ $kind != positive || ${BASH_REMATCH[1]} =~ [1-9] ]] ||
        bad_value "$name" "$value" "$why"
      [[ $kind != fraction ]] ||
        awk -v x="$value" 'BEGIN { exit !(x + 0 <= 1) }' ||
        bad_value "$name" "$value" "$why" ;;
    choice)
      local choices
      read -ra choices <<< "${CHOICES[$name]}"
      is_one_of "$value" "${choices[@]}" ||
        bad_value "$name" "$value" "use $(or_list "${choices[@]}")" ;;
    layers)
      [[ -z "$value" || "$value" =~ ^\ *[0-9]+\ *(,\ *[0-9]+\ *)*$ ]] ||
        bad_value "$name" "$value" \
          "use layer numbers separated by commas, e.g. 0,2,4" ;;
    glue_task)
      [[ -z "$value" ]] ||
        is_one_of "$(glue_task_name "$value")" "${GLUE_TASKS[@]}" ||
        bad_value "$name" "$value" "use $(or_list "${GLUE_TASKS[@]}")" \
          "(run_classifier.py --task_name), or none to skip stage G" ;;
    stages)
      local stage given=() known=0 unknown=() why=""
      IFS=, read -ra given <<< "$value"
      for stage in "${given[@]}"; do
        if is_one_of "$stage" "${STAGE_NAMES[@]}"; then
          known=$((known + 1))
        elif [[ -n "$stage" ]]; then
          unknown+=("$stage")
        fi
      done
      if [[ ${#unknown[@]} -eq 1 ]]; then
        why="unknown stage ${unknown[0]}"
      elif [[ ${#unknown[@]} -gt 1 ]]; then
        why="unknown stages $(comma_list "${unknown[@]}")"
      elif [[ $known -eq 0 ]]; then
        why="no stage given"
      fi
      [[ -z "$why" ]] || bad_value "$name" "$value" \
        "$why; give some of $(comma_list "${STAGE_NAMES[@]}") (comma-separated)" ;;
  esac
}

# Flags become the upper-case variables.
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --*=*) name=${1%%=*}; name=${name#--}; value=${1#*=}; shift ;;
    --*) name=${1#--}
         if [[ $# -lt 2 ]]; then echo "error: $1 needs a value" >&2; exit 2; fi
         value=$2; shift 2 ;;
    *) echo "error: unexpected argument '$1' (settings are --name=value; see --help)" >&2
       exit 2 ;;
  esac
  if ! is_setting "$name"; then
    echo "error: unknown flag --$name (see --help)" >&2
    exit 2
  fi
  printf -v "${name^^}" '%s' "$value"
done

# Defaults, in the order of SETTINGS, so later ones can use earlier ones.
for entry in "${SETTINGS[@]}"; do
  IFS='|' read -r name default _ <<< "$entry"
  var=${name^^}
  if [[ -z "${!var+x}" ]]; then
    eval "$var=\"$default\""
  fi
  check_setting "$name"
done
# Settings that go together.
[[ "$TEACHER_PRETRAIN_STEPS" -eq 0 || "$TEACHER_HEAD_STEPS" -eq 0 ]] ||
  bad_setting "--teacher_pretrain_steps=$TEACHER_PRETRAIN_STEPS and" \
    "--teacher_head_steps=$TEACHER_HEAD_STEPS: give one of them, not both"
[[ "$SHARD_INDEX" -lt "$NUM_SHARDS" ]] ||
  bad_value shard_index "$SHARD_INDEX" "use a number below --num_shards ($NUM_SHARDS)"
[[ -z "$INIT_LAYER_MAP" || -n "$INIT_CHECKPOINT" ]] ||
  bad_value init_layer_map "$INIT_LAYER_MAP" \
    "needs --init_checkpoint (the weights it maps)"
found=$(command -v "$PYTHON") || bad_value python "$PYTHON" "no such command"
PYTHON=$found
[[ -n "$WORK_DIR" ]] || bad_value work_dir "" "give a folder"

STAGE_DIR="$WORK_DIR/stages"
LOG_DIR="$WORK_DIR/logs"

wants() { [[ ",$STAGES," == *",$1,"* ]]; }

die() { echo "run_pipeline.sh: error: $*" >&2; exit 1; }

require_file() {  # require_file STAGE WHAT PATH
  [[ -e "$3" ]] || die "stage $1 needs $2, but $3 does not exist"
}

# What a stage's marker holds: the checksums of the markers of the stages in
# UPSTREAM (an array), the size and modification time of the files in INPUTS
# (an array; optional) and the command line in COMMAND (an array).
marker_text() {
  local upstream input
  for upstream in "${UPSTREAM[@]}"; do
    if [[ -f "$STAGE_DIR/$upstream.done" ]]; then
      echo "after $upstream: $(cksum < "$STAGE_DIR/$upstream.done")"
    fi
  done
  for input in "${INPUTS[@]}"; do
    echo "input $(stat -L -c '%s %.9Y' "$input" 2>/dev/null || echo missing) $input"
  done
  printf '%q ' "${COMMAND[@]}"
  echo
}

# run_stage STAGE DESCRIPTION OUTPUT: runs COMMAND (an array) unless STAGE's
# marker says it is done with the same command and inputs. UPSTREAM (an array)
# names the stages whose outputs it reads.
run_stage() {
  local stage=$1 description=$2 output=$3
  local marker="$STAGE_DIR/$stage.done" expected
  expected=$(marker_text)
  INPUTS=()  # Each stage names its own.
  if [[ -f "$marker" ]]; then
    if [[ "$(cat "$marker")" == "$expected" ]]; then
      echo "== stage $stage ($description): done before, skipped; output: $output"
      return 0
    fi
    local changed
    changed=$(diff <(echo "$expected") "$marker" | sed -n 's/^< input [^ ]* [^ ]* //p' | head -n 1 || true)
    if [[ -n "$changed" ]]; then
      die "stage $stage ($description): its input $changed was rewritten" \
          "since it made $output (see $marker). Delete $output and $marker" \
          "to redo it from the new input."
    fi
    die "stage $stage ($description): $output was made with other settings or" \
        "inputs than now (see $marker). Delete $output and $marker to redo" \
        "it, or run with the settings of then."
  fi
  echo "== stage $stage ($description): running; log: $LOG_DIR/$stage.log"
  echo "   ${COMMAND[*]}"
  local status=0
  # tee -i: Ctrl-C reaches tee too, and the stage's last lines (its
  # `error: interrupted` among them) are still to come.
  "${COMMAND[@]}" 2>&1 | tee -i "$LOG_DIR/$stage.log" || status=$?
  if [[ $status -eq 130 || $status -eq 143 ]]; then
    local how="interrupted (Ctrl-C)"
    [[ $status -eq 143 ]] && how="terminated (SIGTERM)"
    echo "run_pipeline.sh: stage $stage ($description) $how; rerun the" \
         "same command to resume: finished stages are skipped." >&2
    exit "$status"
  elif [[ $status -ne 0 ]]; then
    echo "run_pipeline.sh: stage $stage ($description) FAILED with exit" \
         "status $status; see $LOG_DIR/$stage.log. Fix the cause and rerun" \
         "the same command: finished stages are skipped." >&2
    exit "$status"
  fi
  echo "$expected" > "$marker.tmp" && mv "$marker.tmp" "$marker"
  echo "== stage $stage ($description): done; output: $output"
}

# The files of a folder matching a pattern, sorted, one a line (none when
# the folder does not exist).
sorted_files() {  # sorted_files DIR PATTERN
  find "$1" -maxdepth 1 -name "$2" 2>/dev/null | LC_ALL=C sort
}

# The files of a checkpoint (a prefix, or a folder of checkpoints), one a line:
# what a marker records of a checkpoint a stage reads, so that one replaced
# in place is noticed.
checkpoint_files() {  # checkpoint_files CHECKPOINT
  if [[ -d "$1" ]]; then
    find "$1" -maxdepth 1 \( -name checkpoint -o -name '*.index' -o \
         -name '*.data-*' \) ! -name '*.tmp-*' 2>/dev/null | LC_ALL=C sort
  else
    printf '%s\n' "$1.index"
    find "$(dirname "$1")" -maxdepth 1 -name "$(basename "$1").data-*" \
         ! -name '*.tmp-*' 2>/dev/null | LC_ALL=C sort
  fi
}

join_by_comma() {  # join_by_comma ITEM...
  local IFS=,
  echo "$*"
}

echo "run_pipeline.sh: work_dir $WORK_DIR, stages $STAGES"
INPUTS=()

# The stages that run a model compute in PRECISION; auto asks the hardware.
if wants T || wants IV || wants V || wants G; then
  if [[ "$PRECISION" == auto ]]; then
    choice=$(cd "$ROOT" && "$PYTHON" -m bert_distill.hardware 2>/dev/null) ||
      die "--precision=auto: $PYTHON -m bert_distill.hardware failed; give --precision=float32 or mixed_bfloat16"
    PRECISION=${choice%% *}
    echo "run_pipeline.sh: precision $choice"
  else
    echo "run_pipeline.sh: precision $PRECISION (given)"
  fi
fi

# Stage IV names its files as stage III-b does: one pattern for both.
RECORDS_PATTERN="${OUTPUT_BASE_NAME}_*.tfrecord"
RECORDS="$RECORDS_DIR/$RECORDS_PATTERN"

# Every input of a stage that no stage before it in this run makes must
# exist now: a missing one stops the run before its first stage, not after
# the stages before the one that reads it.
has_files() { [[ -n "$(sorted_files "$1" "$2")" ]]; }  # has_files DIR PATTERN
need_checkpoint() {  # need_checkpoint STAGE WHAT CHECKPOINT (a prefix or a folder)
  [[ -e "$3" || -e "$3.index" ]] ||
    die "stage $1 needs $2, but neither $3 nor $3.index exists"
}
# Stages IV and G read the teacher stage T trains when it trains one.
TEACHER_MODEL=$TEACHER_CHECKPOINT
TEACHER_MODEL_IS="the teacher's checkpoint (--teacher_checkpoint or --teacher_dir)"
if [[ "$TEACHER_PRETRAIN_STEPS" -gt 0 || "$TEACHER_HEAD_STEPS" -gt 0 ]]; then
  TEACHER_MODEL=$TEACHER_TRAIN_DIR
  TEACHER_MODEL_IS="the teacher stage T trains (--teacher_train_dir)"
  wants T && T_MAKES_TEACHER=true
fi
makes_teacher() { [[ "${T_MAKES_TEACHER:-}" == true ]]; }

if wants II; then
  [[ -n "$DUMP" ]] || die "stage II needs --dump (or DUMP=...): a *-pages-articles*.xml.bz2 file"
  require_file II "the dump" "$DUMP"
fi
if wants III-a && ! wants II; then
  require_file III-a "the text file (--text_file, or stage II)" "$TEXT_FILE"
fi
if wants III-b; then
  wants III-a || require_file III-b "the split text (--split_dir, or stage III-a)" "$SPLIT_DIR"
  require_file III-b "the vocabulary (--vocab_file or --teacher_dir)" "$VOCAB_FILE"
fi
if makes_teacher; then
  require_file T "the teacher's config (--teacher_config or --teacher_dir)" "$TEACHER_CONFIG"
  [[ "$TEACHER_HEAD_STEPS" -eq 0 ]] || need_checkpoint T \
    "the teacher's checkpoint (--teacher_checkpoint or --teacher_dir)" "$TEACHER_CHECKPOINT"
  wants III-b || has_files "$RECORDS_DIR" "$RECORDS_PATTERN" ||
    die "stage T needs pretraining records in $RECORDS_DIR (stage III-b)"
fi
if wants IV; then
  require_file IV "the teacher's config (--teacher_config or --teacher_dir)" "$TEACHER_CONFIG"
  makes_teacher || need_checkpoint IV "$TEACHER_MODEL_IS" "$TEACHER_MODEL"
  wants III-b || has_files "$RECORDS_DIR" "$RECORDS_PATTERN" ||
    die "stage IV needs pretraining records in $RECORDS_DIR (stage III-b)"
fi
if wants V; then
  require_file V "the student's config (--student_config)" "$STUDENT_CONFIG"
  wants IV || has_files "$TEACHER_LABELS_DIR" "$RECORDS_PATTERN" ||
    die "stage V needs teacher labels in $TEACHER_LABELS_DIR (stage IV)"
  # (With stage T in the run, INIT_CHECKPOINT may be the teacher it makes.)
  if [[ -n "$INIT_CHECKPOINT" ]] && ! makes_teacher; then
    need_checkpoint V --init_checkpoint "$INIT_CHECKPOINT"
  fi
fi
if wants G && [[ -n "$GLUE_TASK" ]]; then
  [[ -n "$GLUE_DATA_DIR" ]] || die "stage G needs --glue_data_dir: the folder of $GLUE_TASK's TSV files"
  require_file G "the task's training file" "$GLUE_DATA_DIR/train.tsv"
  require_file G "the vocabulary (--vocab_file or --teacher_dir)" "$VOCAB_FILE"
  require_file G-teacher "the teacher's config" "$TEACHER_CONFIG"
  require_file G-student "the student's config" "$STUDENT_CONFIG"
  makes_teacher || need_checkpoint G-teacher "$TEACHER_MODEL_IS" "$TEACHER_MODEL"
  wants V || require_file G-student "the student's checkpoints (--student_dir, stage V)" "$STUDENT_DIR"
fi

mkdir -p "$STAGE_DIR" "$LOG_DIR"

if wants II; then
  UPSTREAM=()
  INPUTS=("$DUMP")
  COMMAND=(env PYTHON="$PYTHON" PROCESSES="$PROCESSES"
           bash "$ROOT/extract_wikipedia_for_bert/extract.sh"
           "$DUMP" "$EXTRACT_DIR" "$TEXT_FILE")
  run_stage II "extract Wikipedia" "$TEXT_FILE"
fi

if wants III-a; then
  UPSTREAM=(II)
  # split_text.py removes the pieces of its former runs itself.
  INPUTS=("$TEXT_FILE")
  COMMAND=("$PYTHON" "$ROOT/split_text.py" --read_file="$TEXT_FILE"
           --split_number="$SPLIT_NUMBER" --folder="$SPLIT_DIR"
           --name_base="$NAME_BASE")
  run_stage III-a "split the text" "$SPLIT_DIR"
fi

if wants III-b; then
  UPSTREAM=(III-a)
  mapfile -t INPUTS < <(sorted_files "$SPLIT_DIR" "*.txt")
  COMMAND=("$PYTHON" "$ROOT/multifile_create_pretraining_data.py"
           --input_dir="$SPLIT_DIR" --output_dir="$RECORDS_DIR"
           --output_base_name="$OUTPUT_BASE_NAME" --vocab_file="$VOCAB_FILE"
           --do_lower_case="$DO_LOWER_CASE" --max_seq_length="$MAX_SEQ_LENGTH"
           --max_predictions_per_seq="$MAX_PREDICTIONS_PER_SEQ"
           --random_seed="$RANDOM_SEED" --dupe_factor="$DUPE_FACTOR"
           --masked_lm_prob="$MASKED_LM_PROB" --short_seq_prob="$SHORT_SEQ_PROB"
           --do_whole_word_mask="$DO_WHOLE_WORD_MASK" --num_workers="$NUM_WORKERS")
  run_stage III-b "pretraining records" "$RECORDS_DIR"
fi

if wants T && [[ "$TEACHER_HEAD_STEPS" -gt 0 ]]; then
  mapfile -t t_records < <(sorted_files "$RECORDS_DIR" "$RECORDS_PATTERN")
  [[ ${#t_records[@]} -gt 0 ]] ||
    die "stage T needs pretraining records in $RECORDS_DIR (stage III-b)"
  # The head is scored on the held-out files when there are some (as V is).
  t_train=${#t_records[@]}
  if [[ "$HOLDOUT_FILES" -gt 0 && $t_train -gt "$HOLDOUT_FILES" ]]; then
    t_train=$(( t_train - HOLDOUT_FILES ))
  fi
  T_EVAL=()
  [[ $t_train -lt ${#t_records[@]} ]] &&
    T_EVAL=(--eval_input_file="$(join_by_comma "${t_records[@]:t_train}")")
  UPSTREAM=(III-b)
  # shellcheck disable=SC2206  # DISTILL_FLAGS is a list of words on purpose.
  COMMAND=("$PYTHON" "$ROOT/distill.py" --do_train --do_eval
           --bert_config_file="$TEACHER_CONFIG"
           --init_checkpoint="$TEACHER_CHECKPOINT"
           --trainable="$TEACHER_TRAINABLE"
           --input_file="$(join_by_comma "${t_records[@]:0:t_train}")"
           "${T_EVAL[@]}" --output_dir="$TEACHER_TRAIN_DIR"
           --soft_loss_weight=0 --hard_mlm_loss_weight=1
           --next_sentence_loss_weight=0
           --max_seq_length="$MAX_SEQ_LENGTH"
           --max_predictions_per_seq="$MAX_PREDICTIONS_PER_SEQ"
           --train_batch_size="$TEACHER_TRAIN_BATCH_SIZE"
           --eval_batch_size="$EVAL_BATCH_SIZE"
           --learning_rate="$TEACHER_LEARNING_RATE"
           --num_train_steps="$TEACHER_HEAD_STEPS"
           --num_warmup_steps="$TEACHER_WARMUP_STEPS"
           --save_checkpoints_steps="$SAVE_CHECKPOINTS_STEPS"
           --iterations_per_loop="$ITERATIONS_PER_LOOP"
           --max_eval_steps="$MAX_EVAL_STEPS" --precision="$PRECISION"
           $DISTILL_FLAGS)
  run_stage T "fit the teacher's MLM head" "$TEACHER_TRAIN_DIR"
fi
if wants T && [[ "$TEACHER_PRETRAIN_STEPS" -gt 0 ]]; then
  [[ -n "$(sorted_files "$RECORDS_DIR" "$RECORDS_PATTERN")" ]] ||
    die "stage T needs pretraining records in $RECORDS_DIR (stage III-b)"
  UPSTREAM=(III-b)
  mapfile -t INPUTS < <(echo "$TEACHER_CONFIG"; sorted_files "$RECORDS_DIR" "$RECORDS_PATTERN")
  # shellcheck disable=SC2206  # DISTILL_FLAGS is a list of words on purpose.
  COMMAND=("$PYTHON" "$ROOT/distill.py" --do_train --do_eval
           --bert_config_file="$TEACHER_CONFIG" --input_file="$RECORDS"
           --output_dir="$TEACHER_TRAIN_DIR"
           --soft_loss_weight=0 --hard_mlm_loss_weight=1
           --max_seq_length="$MAX_SEQ_LENGTH"
           --max_predictions_per_seq="$MAX_PREDICTIONS_PER_SEQ"
           --train_batch_size="$TEACHER_TRAIN_BATCH_SIZE"
           --eval_batch_size="$EVAL_BATCH_SIZE"
           --learning_rate="$TEACHER_LEARNING_RATE"
           --num_train_steps="$TEACHER_PRETRAIN_STEPS"
           --num_warmup_steps="$TEACHER_WARMUP_STEPS"
           --save_checkpoints_steps="$SAVE_CHECKPOINTS_STEPS"
           --iterations_per_loop="$ITERATIONS_PER_LOOP"
           --max_eval_steps="$MAX_EVAL_STEPS" --precision="$PRECISION"
           $DISTILL_FLAGS)
  run_stage T "pretrain a teacher" "$TEACHER_TRAIN_DIR"
fi
if [[ "$TEACHER_PRETRAIN_STEPS" -gt 0 || "$TEACHER_HEAD_STEPS" -gt 0 ]]; then
  TEACHER_CHECKPOINT=$TEACHER_TRAIN_DIR
  TEACHER_STAGE=T
else
  TEACHER_STAGE=III-b
fi

# The last HOLDOUT_FILES record files are held out: stage IV labels them in
# full mode (their first HELDOUT_EXAMPLES records), stage V evaluates on them.
mapfile -t record_files < <(sorted_files "$RECORDS_DIR" "$RECORDS_PATTERN")
num_train_records=${#record_files[@]}
if [[ "$HOLDOUT_FILES" -gt 0 && ${#record_files[@]} -gt "$HOLDOUT_FILES" ]]; then
  num_train_records=$(( ${#record_files[@]} - HOLDOUT_FILES ))
fi
TRAIN_RECORDS=$(join_by_comma "${record_files[@]:0:num_train_records}")
HELDOUT_RECORDS=$(join_by_comma "${record_files[@]:num_train_records}")

if wants IV; then
  [[ ${#record_files[@]} -gt 0 ]] ||
    die "stage IV needs pretraining records in $RECORDS_DIR (stage III-b)"
  UPSTREAM=(III-b "$TEACHER_STAGE")
  # What IV reads besides its records: the teacher's files and vocabulary.
  mapfile -t TEACHER_INPUTS < <(echo "$TEACHER_CONFIG"
                                checkpoint_files "$TEACHER_CHECKPOINT"
                                [[ -f "$VOCAB_FILE" ]] && echo "$VOCAB_FILE")
  INPUTS=("${TEACHER_INPUTS[@]}" "${record_files[@]:0:num_train_records}")
  SHARD=""
  [[ "$NUM_SHARDS" -gt 1 ]] && SHARD="-shard$SHARD_INDEX"
  VOCAB_FLAG=()
  [[ -f "$VOCAB_FILE" ]] && VOCAB_FLAG=(--vocab_file="$VOCAB_FILE")
  TEACHER_FLAGS=(--bert_config_file="$TEACHER_CONFIG"
                 --init_checkpoint="$TEACHER_CHECKPOINT" "${VOCAB_FLAG[@]}"
                 --max_seq_length="$MAX_SEQ_LENGTH"
                 --max_predictions_per_seq="$MAX_PREDICTIONS_PER_SEQ"
                 --batch_size="$TEACHER_BATCH_SIZE")
  # shellcheck disable=SC2206  # LABEL_FLAGS is a list of words on purpose.
  COMMAND=("$PYTHON" "$ROOT/extract_teacher_labels_truncated.py"
           "${TEACHER_FLAGS[@]}"
           --input_file="$TRAIN_RECORDS" --output_dir="$TEACHER_LABELS_DIR"
           --label_mode="$LABEL_MODE" --truncation_factor="$TRUNCATION_FACTOR"
           --num_samples="$NUM_SAMPLES" --sample_temperature="$TEMPERATURE"
           --seed="$LABEL_SEED" --precision="$PRECISION"
           --num_shards="$NUM_SHARDS" --shard_index="$SHARD_INDEX" $LABEL_FLAGS)
  run_stage "IV$SHARD" "teacher labels" "$TEACHER_LABELS_DIR"
  if [[ -n "$HELDOUT_RECORDS" && "$SHARD_INDEX" -eq 0 ]]; then
    INPUTS=("${TEACHER_INPUTS[@]}" "${record_files[@]:num_train_records}")
    # float32 (the default): the reference stage V's teacher_kl is measured
    # against, and a few records only.
    COMMAND=("$PYTHON" "$ROOT/extract_teacher_labels_truncated.py"
             "${TEACHER_FLAGS[@]}"
             --input_file="$HELDOUT_RECORDS" --output_dir="$HELDOUT_LABELS_DIR"
             --label_mode=full --max_records="$HELDOUT_EXAMPLES")
    run_stage "IV-held-out" "held-out labels, full distribution" "$HELDOUT_LABELS_DIR"
  fi
fi

if wants V; then
  mapfile -t label_files < <(sorted_files "$TEACHER_LABELS_DIR" "$RECORDS_PATTERN")
  num_labels=${#label_files[@]}
  [[ $num_labels -gt 0 ]] || die "stage V needs teacher labels in $TEACHER_LABELS_DIR (stage IV)"
  TRAIN_FILES=$(join_by_comma "${label_files[@]}")
  mapfile -t held_out_files < <(sorted_files "$HELDOUT_LABELS_DIR" "$RECORDS_PATTERN")
  EVAL_FLAG=()
  if [[ ${#held_out_files[@]} -gt 0 ]]; then
    EVAL_FLAG=(--eval_input_file="$(join_by_comma "${held_out_files[@]}")"
               --require_full_eval_labels)
  else
    echo "run_pipeline.sh: no held-out labels in $HELDOUT_LABELS_DIR: stage V evaluates on its training files"
  fi
  INIT_FLAGS=()
  [[ -n "$INIT_CHECKPOINT" ]] && INIT_FLAGS+=(--init_checkpoint="$INIT_CHECKPOINT")
  [[ -n "$INIT_LAYER_MAP" ]] && INIT_FLAGS+=(--init_layer_map="$INIT_LAYER_MAP")
  UPSTREAM=(IV IV-held-out)
  INPUTS=("$STUDENT_CONFIG" "${label_files[@]}" "${held_out_files[@]}")
  if [[ -n "$INIT_CHECKPOINT" ]]; then
    mapfile -t -O "${#INPUTS[@]}" INPUTS < <(checkpoint_files "$INIT_CHECKPOINT")
  fi
  # Stage V reads the label mode, k, N and T from the records themselves.
  # shellcheck disable=SC2206  # DISTILL_FLAGS is a list of words on purpose.
  COMMAND=("$PYTHON" "$ROOT/distill.py" --do_train --do_eval
           --bert_config_file="$STUDENT_CONFIG" --input_file="$TRAIN_FILES"
           "${EVAL_FLAG[@]}" --output_dir="$STUDENT_DIR" "${INIT_FLAGS[@]}"
           --max_seq_length="$MAX_SEQ_LENGTH"
           --max_predictions_per_seq="$MAX_PREDICTIONS_PER_SEQ"
           --train_batch_size="$TRAIN_BATCH_SIZE"
           --eval_batch_size="$EVAL_BATCH_SIZE"
           --learning_rate="$LEARNING_RATE" --num_train_steps="$NUM_TRAIN_STEPS"
           --num_warmup_steps="$NUM_WARMUP_STEPS"
           --save_checkpoints_steps="$SAVE_CHECKPOINTS_STEPS"
           --iterations_per_loop="$ITERATIONS_PER_LOOP"
           --max_eval_steps="$MAX_EVAL_STEPS"
           --temperature="$TEMPERATURE" --soft_loss_weight="$SOFT_LOSS_WEIGHT"
           --hard_mlm_loss_weight="$HARD_MLM_LOSS_WEIGHT"
           --precision="$PRECISION" $DISTILL_FLAGS)
  run_stage V "distill the student" "$STUDENT_DIR"
  if [[ -f "$STUDENT_DIR/eval_results.txt" ]]; then
    echo "== the student's $STUDENT_DIR/eval_results.txt:"
    cat "$STUDENT_DIR/eval_results.txt"
  fi
fi

if wants G && [[ -n "$GLUE_TASK" ]]; then
  # Teacher and student: the same fine-tuning, each from its own checkpoint.
  for model in teacher student; do
    if [[ $model == teacher ]]; then
      config=$TEACHER_CONFIG checkpoint=$TEACHER_CHECKPOINT
      UPSTREAM=("$TEACHER_STAGE")
    else
      config=$STUDENT_CONFIG checkpoint=$STUDENT_DIR
      UPSTREAM=(V)
    fi
    mapfile -t INPUTS < <(echo "$config"; echo "$VOCAB_FILE"
                          checkpoint_files "$checkpoint"
                          sorted_files "$GLUE_DATA_DIR" "*.tsv")
    # shellcheck disable=SC2206  # GLUE_FLAGS is a list of words on purpose.
    COMMAND=("$PYTHON" "$ROOT/run_classifier.py" --task_name="$GLUE_TASK"
             --data_dir="$GLUE_DATA_DIR" --vocab_file="$VOCAB_FILE"
             --do_lower_case="$DO_LOWER_CASE" --bert_config_file="$config"
             --init_checkpoint="$checkpoint" --output_dir="$GLUE_DIR/$model"
             --max_seq_length="$GLUE_MAX_SEQ_LENGTH" --do_train --do_eval
             --precision="$PRECISION" $GLUE_FLAGS)
    run_stage "G-$model" "fine-tune the $model on $GLUE_TASK" "$GLUE_DIR/$model"
  done
  students=(student)
  if [[ "$GLUE_TASK_DISTILLATION" == true ]]; then
    # The student again from its distilled weights, now learning the
    # fine-tuned teacher's predictions.
    UPSTREAM=(G-teacher V)
    # shellcheck disable=SC2206  # GLUE_*FLAGS are lists of words on purpose.
    COMMAND=("$PYTHON" "$ROOT/run_classifier.py" --task_name="$GLUE_TASK"
             --data_dir="$GLUE_DATA_DIR" --vocab_file="$VOCAB_FILE"
             --do_lower_case="$DO_LOWER_CASE" --bert_config_file="$STUDENT_CONFIG"
             --init_checkpoint="$STUDENT_DIR"
             --teacher_checkpoint="$GLUE_DIR/teacher"
             --teacher_config="$GLUE_DIR/teacher/bert_config.json"
             --output_dir="$GLUE_DIR/student_distilled"
             --max_seq_length="$GLUE_MAX_SEQ_LENGTH" --do_train --do_eval
             --precision="$PRECISION" $GLUE_FLAGS $GLUE_DISTILL_FLAGS)
    run_stage G-distilled "task-distil the student on $GLUE_TASK" \
      "$GLUE_DIR/student_distilled"
    students+=(student_distilled)
  fi
  for student in "${students[@]}"; do
    echo "== $GLUE_TASK, dev set ($GLUE_DIR/{teacher,$student}/eval_results.txt):"
    awk -F' = ' -v who="$student" 'FNR == NR { teacher[$1] = $2; next }
        $1 ~ /^eval_/ && $1 != "eval_loss" {
          ratio = teacher[$1] != 0 ? sprintf("%.3f", $2 / teacher[$1]) : "-"
          printf "   %-20s teacher %.4f   %s %.4f   %s/teacher %s\n",
                 $1, teacher[$1], who, $2, who, ratio }' \
        "$GLUE_DIR/teacher/eval_results.txt" "$GLUE_DIR/$student/eval_results.txt"
  done
fi

echo "run_pipeline.sh: finished (stages $STAGES) in $WORK_DIR"
