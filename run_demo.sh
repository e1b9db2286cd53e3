#!/usr/bin/env bash
# `make demo`: the whole pipeline, end to end, on the bundled example dump.
#
# No Google checkpoint can be bundled, so the demo first pretrains a small
# teacher itself (distill.py with hard labels only: plain BERT pretraining),
# then extracts that teacher's labels (run_pipeline.sh's recommended label
# mode; the held-out file's in full, so the student's evaluation says how far
# it is from the teacher: teacher_kl) and distils a smaller student.
# The small vocabulary (data/example_wiki/vocab.txt) is the subset of BERT's
# uncased vocabulary that the example corpus uses: it tokenizes the corpus
# exactly as the full one does, with an 11x smaller softmax.
# The downstream stage G then fine-tunes the teacher and the student on the
# bundled movie-review task (data/movie_reviews, SST-2's layout: every line
# of train.tsv, 2 epochs) and scores both on its dev.tsv. Review words that
# the small vocabulary lacks become word pieces or [UNK] (about a fifth of
# the tokens): the demo's accuracies are far below a real BERT's, and say
# only how much of the teacher's the student keeps.
# The models compute in bfloat16 where the hardware has bfloat16 units (CPU
# flags amx_bf16 or avx512_bf16, or a GPU of compute capability >= 8.0), in
# float32 elsewhere: run_pipeline.sh's --precision=auto, which says its
# choice in the first lines of the log (PRECISION=float32 ./run_demo.sh
# forces one).
# A rerun skips every finished stage; `make clean-demo` starts over.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-demo_output}
EXAMPLE=data/example_wiki
./run_pipeline.sh --work_dir="$OUT" \
    --dump="$EXAMPLE/enwiki-example-pages-articles.xml.bz2" \
    --vocab_file="$EXAMPLE/vocab.txt" \
    --teacher_config="$EXAMPLE/teacher_bert_config.json" \
    --student_config="$EXAMPLE/student_bert_config.json" \
    --split_number=4 --dupe_factor=5 \
    --max_seq_length=64 --max_predictions_per_seq=10 \
    --teacher_pretrain_steps=2500 --teacher_learning_rate=2e-3 \
    --num_train_steps=1500 --num_warmup_steps=150 --learning_rate=2e-3 \
    --iterations_per_loop=250 --save_checkpoints_steps=500 --max_eval_steps=20 \
    --glue_task=sst-2 --glue_data_dir=data/movie_reviews \
    --glue_max_seq_length=64 \
    --glue_flags="--num_train_epochs=2 --learning_rate=2e-4 --eval_batch_size=64"
cat <<TXT

demo: outputs
  II    text, one sentence a line     $OUT/wiki.txt
  III-a split text                    $OUT/text/
  III-b pretraining records           $OUT/records/
  T     the demo's teacher            $OUT/teacher/  (eval: $OUT/teacher/eval_results.txt)
  IV    records + teacher labels      $OUT/teacher_labels/  (held out, full distribution: $OUT/teacher_labels_held_out/)
  V     the student                   $OUT/student/  (eval: $OUT/student/eval_results.txt)
  G     both fine-tuned on movie reviews $OUT/glue/{teacher,student}/
  logs of every stage                 $OUT/logs/

demo: the student's evaluation on the held-out file ($OUT/student/eval_results.txt):
TXT
sed 's/^/  /' "$OUT/student/eval_results.txt"
teacher_kl=$(sed -n 's/^teacher_kl = //p' "$OUT/student/eval_results.txt")
cat <<TXT

demo: the student is teacher_kl = $teacher_kl nats from its teacher (held-out
mean KL(teacher || student) over the whole vocabulary; docs/label_modes.md).
TXT
echo
echo "demo: movie-review sentiment (data/movie_reviews), dev accuracy after fine-tuning:"
awk -F' = ' '$1 == "eval_accuracy" { accuracy[FILENAME] = $2 }
    END { t = accuracy[ARGV[1]]; s = accuracy[ARGV[2]]
          printf "  teacher %.4f   student %.4f   student/teacher %.3f\n",
                 t, s, s / t }' \
    "$OUT/glue/teacher/eval_results.txt" "$OUT/glue/student/eval_results.txt"
cat <<TXT

The same pipeline on a real dump with Google's BERT-Base (uncased_L-12_H-768_A-12
holds bert_config.json, vocab.txt, bert_model.ckpt.*):

  ./run_pipeline.sh --work_dir=wiki_run \\
      --dump=enwiki-latest-pages-articles.xml.bz2 \\
      --teacher_dir=uncased_L-12_H-768_A-12 \\
      --student_config=my_student_bert_config.json \\
      --split_number=256 --num_train_steps=100000

(./run_pipeline.sh --help lists every setting.)
TXT
