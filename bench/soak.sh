#!/usr/bin/env bash
# Soak test of the crash and rerun promises: runs the demo pipeline
# (run_demo.sh's settings, fewer steps) once uninterrupted, then again while
# killing (kill -9) first one process of every stage in turn (II's
# WikiExtractor run and extract_jsons.py, III-a, III-b, T, IV, V: a random 0-1 s
# after it starts, each followed by a rerun; STAGE_KILLS=0 skips them), then
# a random process of a random running stage at a random
# moment, N times, rerunning the same command after each kill. Each kill
# falls in what is left of the pipeline; when a round's rerun finishes before
# its kill moment, its outputs are compared and a new round starts from an
# empty folder. The last round is rerun to the end. The outputs of every
# round must equal the uninterrupted run's:
#
#   II, III-a, III-b  text, split text, pretraining records: byte for byte
#                     (not their *.made_from.json, which name paths)
#   T, V              the teacher's and the student's final checkpoints:
#                     every tensor within rtol 1e-5 (a resumed run adds in
#                     another order), eval_results.txt within rtol 1e-4
#   IV                teacher labels: same records, probabilities within
#                     1e-4 (their teacher may differ in the last bits)
#
# Usage: N=5 SEED=1 bench/soak.sh [WORK_DIR]   (default /tmp/bert_soak)
# Environment: N random kills (5), STAGE_KILLS (1: the kill in every stage
# first), SEED of the choices (1), TEACHER_STEPS (300),
# STUDENT_STEPS (200), HANG_SECONDS (300: a pipeline that neither finishes
# nor fails this long after a kill counts as hung, and is stopped).
# Prints one line per kill (stage, process, moment, how the run ended) and
# a verdict per output and round; exit status 0 when all outputs match and
# no run hung.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/bert_soak}
N=${N:-5}
STAGE_KILLS=${STAGE_KILLS:-1}
SEED=${SEED:-1}
TEACHER_STEPS=${TEACHER_STEPS:-300}
STUDENT_STEPS=${STUDENT_STEPS:-200}
HANG_SECONDS=${HANG_SECONDS:-300}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
EXAMPLE=$ROOT/data/example_wiki
RANDOM=$SEED

pipeline() {  # pipeline WORK_DIR: the demo's pipeline, fewer steps
  "$ROOT/run_pipeline.sh" --python="$PYTHON" --work_dir="$1" \
      --dump="$EXAMPLE/enwiki-example-pages-articles.xml.bz2" \
      --vocab_file="$EXAMPLE/vocab.txt" \
      --teacher_config="$EXAMPLE/teacher_bert_config.json" \
      --student_config="$EXAMPLE/student_bert_config.json" \
      --split_number=4 --dupe_factor=2 --num_workers=2 --processes=2 \
      --max_seq_length=64 --max_predictions_per_seq=10 \
      --teacher_pretrain_steps="$TEACHER_STEPS" --teacher_learning_rate=2e-3 \
      --num_train_steps="$STUDENT_STEPS" --num_warmup_steps=20 \
      --learning_rate=2e-3 --iterations_per_loop=10 \
      --save_checkpoints_steps=50 --max_eval_steps=5
}

mkdir -p "$WORK"
rm -rf "$WORK/clean" "$WORK/soak"
echo "soak: the uninterrupted run ($WORK/clean)"
start=$(date +%s)
pipeline "$WORK/clean" > "$WORK/clean.log" 2>&1 ||
  { echo "soak: the uninterrupted run failed; see $WORK/clean.log"; exit 1; }
clean_seconds=$(( $(date +%s) - start ))
echo "soak: uninterrupted run took ${clean_seconds}s"

# The python processes (stage scripts and their workers) of a process group,
# by their command line (absl renames a stage's process to its script).
group_pythons() {
  ps -eo pid=,pgid=,args= | awk -v g="$1" '$2 == g && $3 ~ /python/ {print $1}'
}

stage_of() {  # the stage script a process runs, for the report
  tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -o '[a-z_]*\.py' |
      grep -v '^-' | tail -1 || echo "?"
}

# Compares the outputs of the clean run and the soak run; a verdict each.
compare() {
  "$PYTHON" - "$WORK/clean" "$WORK/soak" <<'PY'
"""Compares the outputs of two pipeline work folders; prints a verdict each."""
import filecmp
import os
import sys

import numpy as np
import tensorflow as tf

clean, soak = sys.argv[1:3]
failures = 0


def report(name, ok, detail=""):
  global failures
  failures += not ok
  print(f"soak: {name}: {'same' if ok else 'DIFFERENT'} {detail}".rstrip())


def files(folder):
  """The outputs of a folder; *.made_from.json name the inputs by path and
  modification time, which differ between the two work folders."""
  return sorted(f for f in os.listdir(folder)
                if not f.startswith(".") and not f.endswith(".made_from.json"))


for name in ("wiki.txt",):
  report(name, filecmp.cmp(os.path.join(clean, name), os.path.join(soak, name),
                           shallow=False))
for folder in ("text", "records"):
  a, b = os.path.join(clean, folder), os.path.join(soak, folder)
  same = files(a) == files(b) and all(
      filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False)
      for f in files(a))
  report(f"{folder}/ ({len(files(a))} files)", same)

for folder in ("teacher", "student"):
  a = tf.train.latest_checkpoint(os.path.join(clean, folder))
  b = tf.train.latest_checkpoint(os.path.join(soak, folder))
  ra, rb = tf.train.load_checkpoint(a), tf.train.load_checkpoint(b)
  names = sorted(ra.get_variable_to_shape_map())
  worst = max(float(np.max(np.abs(ra.get_tensor(n) - rb.get_tensor(n)) /
                           (np.abs(ra.get_tensor(n)) + 1e-6)))
              for n in names if n != "global_step")
  same = (os.path.basename(a) == os.path.basename(b) and
          names == sorted(rb.get_variable_to_shape_map()) and
          all(np.allclose(rb.get_tensor(n), ra.get_tensor(n), rtol=1e-5,
                          atol=1e-6) for n in names))
  report(f"{folder}/{os.path.basename(a)}", same,
         f"(largest relative difference {worst:.2g})")
  results = [dict(line.split(" = ") for line in
                  open(os.path.join(d, folder, "eval_results.txt")).read()
                  .splitlines()) for d in (clean, soak)]
  report(f"{folder}/eval_results.txt", results[0].keys() == results[1].keys()
         and all(np.isclose(float(results[1][k]), float(results[0][k]),
                            rtol=1e-4) for k in results[0]))

a, b = os.path.join(clean, "teacher_labels"), os.path.join(soak, "teacher_labels")
same, count = files(a) == files(b), 0
for f in files(a):
  for x, y in zip(tf.data.TFRecordDataset(os.path.join(a, f)),
                  tf.data.TFRecordDataset(os.path.join(b, f))):
    fx, fy = (tf.train.Example.FromString(r.numpy()).features.feature
              for r in (x, y))
    count += 1
    for key in fx:
      vx, vy = (np.array(getattr(v[key], v[key].WhichOneof("kind")).value)
                for v in (fx, fy))
      if key == "truncated_masked_lm_probs":
        same &= vx.shape == vy.shape and np.allclose(vx, vy, atol=1e-4)
      elif key != "top_k_indices":  # ids of near ties may swap
        same &= np.array_equal(vx, vy)
report(f"teacher_labels/ ({count} records)", same)
sys.exit(1 if failures else 0)
PY
}

hung=0
kills=0
rounds=1
mismatched=0
# kill_in_stage PATTERN [MAX_TENTHS]: runs the pipeline, kills -9 the first
# of its python processes whose command line matches PATTERN (grep -E) a
# random 0 to MAX_TENTHS/10 s (default 1 s) after it appears, and waits for
# the pipeline to end; the next attempt resumes. A stage that ended before
# its kill (III-a on the bundled dump lives a fraction of a second) is tried
# again in a new round with a shorter delay, down to none.
kill_in_stage() {
  local pattern=$1 max_tenths=${2:-10} victim="" status=0 pid
  pipeline "$WORK/soak" >> "$WORK/soak.log" 2>&1 &
  local leader=$!
  while kill -0 "$leader" 2>/dev/null && [[ -z "$victim" ]]; do
    for pid in $(group_pythons "$leader"); do
      if tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -Eq -- "$pattern"; then
        victim=$pid
        break
      fi
    done
    [[ -z "$victim" ]] && sleep 0.05
  done
  if [[ -n "$victim" ]]; then
    local tenths=$(( RANDOM % max_tenths ))
    sleep "$(( tenths / 10 )).$(( tenths % 10 ))"
    # A process that ended before the kill was not killed: the stage then
    # ran on, and the pipeline with it; that is reported, not counted.
    kill -9 "$victim" 2>/dev/null || victim=""
  fi
  if [[ -n "$victim" ]]; then
    local deadline=$(( $(date +%s) + HANG_SECONDS ))
    while kill -0 "$leader" 2>/dev/null; do
      if (( $(date +%s) > deadline )); then
        echo "soak: HUNG ${HANG_SECONDS}s after the kill of /$pattern/; stopped"
        hung=$(( hung + 1 ))
        kill -9 -- "-$leader" 2>/dev/null || true
        break
      fi
      sleep 1
    done
  fi
  wait "$leader" || status=$?
  echo "soak: stage kill /$pattern/: pid ${victim:-none (not seen, or it ended before the kill)}, the pipeline's status $status"
  if [[ -n "$victim" ]]; then
    kills=$(( kills + 1 ))
  fi
  if [[ $status -eq 0 ]]; then
    # The pipeline ran to its end (the stage survived the kill, or the
    # process had ended): check this round, and let the next stage's kill
    # start a new one, or it would find its stage done.
    echo "soak: round $rounds finished during the stage kills; comparing"
    compare || mismatched=$(( mismatched + 1 ))
    rm -rf "$WORK/soak"
    rounds=$(( rounds + 1 ))
    if [[ -z "$victim" && $max_tenths -gt 1 ]]; then
      kill_in_stage "$pattern" $(( max_tenths / 3 ))
    fi
  fi
}
set -m  # each background pipeline gets a process group of its own
if (( STAGE_KILLS )); then
  for pattern in 'wikiextractor_without_headings\.py' 'extract_jsons\.py' \
                 'split_text\.py' \
                 'multifile_create_pretraining_data\.py' \
                 "distill\.py.*--output_dir=$WORK/soak/teacher( |\$)" \
                 'extract_teacher_labels_truncated\.py' \
                 "distill\.py.*--output_dir=$WORK/soak/student( |\$)"; do
    kill_in_stage "$pattern"
  done
  N=$(( N + kills ))
fi
attempts=0
progress=0  # seconds of pipeline work done by this round's attempts
set -m  # each background pipeline gets a process group of its own
while (( kills < N && attempts < 4 * N )); do
  attempts=$(( attempts + 1 ))
  pipeline "$WORK/soak" >> "$WORK/soak.log" 2>&1 &
  leader=$!  # the process group of this attempt
  # A moment in what is left of the pipeline: each attempt carries on where
  # the last one was killed, so the kills spread over all of its stages.
  left=$(( clean_seconds - progress > 2 ? clean_seconds - progress : 2 ))
  moment=$(( 1 + RANDOM % left ))
  waited=0
  victim=""
  while kill -0 "$leader" 2>/dev/null && (( waited < moment )); do
    sleep 1
    waited=$(( waited + 1 ))
  done
  if kill -0 "$leader" 2>/dev/null; then
    mapfile -t pythons < <(group_pythons "$leader")
    if (( ${#pythons[@]} )); then
      victim=${pythons[RANDOM % ${#pythons[@]}]}
      what=$(stage_of "$victim")
      kill -9 "$victim" 2>/dev/null || victim=""  # it had ended
    fi
  fi
  outcome="the pipeline failed"
  if [[ -n "$victim" ]]; then
    outcome="failed as it should"
    deadline=$(( $(date +%s) + HANG_SECONDS ))
    while kill -0 "$leader" 2>/dev/null; do
      if (( $(date +%s) > deadline )); then
        outcome="HUNG ${HANG_SECONDS}s after the kill; stopped"
        hung=$(( hung + 1 ))
        kill -9 -- "-$leader" 2>/dev/null || true
        break
      fi
      sleep 1
    done
  fi
  progress=$(( progress + waited ))
  status=0
  wait "$leader" || status=$?
  if [[ -n "$victim" ]]; then
    kills=$(( kills + 1 ))
    [[ $status -eq 0 ]] && outcome="exited 0 (the killed process was not needed)"
    echo "soak: kill $kills/$N (round $rounds) at ${moment}s: pid $victim ($what): $outcome (status $status)"
  elif [[ $status -eq 0 ]]; then
    # The pipeline finished before this attempt's moment: check the round,
    # then start another one from nothing.
    echo "soak: round $rounds finished after its kills; comparing"
    compare || mismatched=$(( mismatched + 1 ))
    rm -rf "$WORK/soak"
    progress=0
    rounds=$(( rounds + 1 ))
  else
    echo "soak: FAILED: an attempt failed without a kill (status $status); see $WORK/soak.log"
    exit 1
  fi
done

echo "soak: the final rerun (round $rounds)"
if ! pipeline "$WORK/soak" >> "$WORK/soak.log" 2>&1; then
  echo "soak: FAILED: the final rerun did not finish; see $WORK/soak.log"
  exit 1
fi
compare || mismatched=$(( mismatched + 1 ))
echo "soak: N=$N kills in $rounds round(s), seed $SEED: $mismatched round(s) with different outputs, $hung hung"
[[ $mismatched -eq 0 && $hung -eq 0 ]]
