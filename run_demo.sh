#!/usr/bin/env bash
# `make demo`: the pipeline end to end on the bundled example data.
# Runs every stage that exists so far; see README.md.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-demo_output}
mkdir -p "$OUT"
echo "demo: checking the bundled original records with the shared record spec"
python - <<'PY'
import records
records.check_record_lengths("../shared/data/original_sample_records.tfrecord",
                             records.pretraining_feature_spec(128, 20))
print("demo: ../shared/data/original_sample_records.tfrecord fits max_seq_length 128, max_predictions_per_seq 20")
PY
