"""Stage IV: the teacher's masked-LM labels for every example.

Reads pretraining records (Google's create_pretraining_data.py format), runs
the teacher BERT once over them and writes each example again, unchanged,
plus what --label_mode keeps of the teacher's softmax at each masked
position (records.py defines the features; docs/label_modes.md compares
them):

  top_k    (default, the original's) the k = --truncation_factor most
           probable tokens: truncated_masked_lm_probs, descending, and
           top_k_indices [P * k] each;
  full     the whole distribution, masked_lm_probs [P * vocab_size] (also
           spelt --truncation_factor 0);
  sampled  --num_samples N draws with replacement from the softmax at
           --sample_temperature T: the distinct ids drawn, most frequent
           first, and their counts in k slots (sampled_token_ids,
           sampled_token_counts [P * k]), with N and T in each record. The
           draws are a function of --seed, the input file's name and the
           record's index in it, never of batching or sharding. With
           --exact_top_k h the h most probable tokens are kept exactly
           (sampled_head_probs, sampled_head_ids [P * h]) and the draws come
           from the rest of the distribution.

The softmax is float32 over the full vocabulary, whatever --precision the
teacher computes in; the MLM head runs only at the masked positions.

Speed without changing the numbers: examples of similar length are batched
together (within windows of --sort_batches batches; the output keeps input
order) and each batch is cut to its longest real sequence (rounded up to
--length_multiple so XLA compiles few shapes; the attention mask makes
padding contribute exactly zero), the forward pass,
softmax and top-k run as one function (XLA-compiled on GPUs), tf.data reads and parses
the next batches while the model runs, and records are encoded straight from
NumPy arrays. With several GPUs a MirroredStrategy splits each batch across
them; --num_shards/--shard_index split the corpus across processes or
machines instead.

Shape legend: B = batch, S = sequence length (trimmed), L = max_seq_length,
P = max_predictions_per_seq, V = vocab size, K = truncation_factor.
"""

from absl import flags
from absl import logging

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import distill_training
from bert_distill import distribution
from bert_distill import label_provenance
from bert_distill import label_settings
from bert_distill import records
from bert_distill import shard_flags
from bert_distill import teacher_labels

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None,
                    "The teacher's bert_config.json (or HF config.json). "
                    "Default: the config beside --init_checkpoint.")
flags.DEFINE_string("init_checkpoint", None,
                    "The teacher's checkpoint: Google's variable names (a "
                    "prefix such as bert_model.ckpt, or a directory) or an "
                    "HF folder (config.json + model.safetensors). It needs a "
                    "masked-LM head (stage T fits one onto an encoder-only "
                    "model).")
flags.DEFINE_string("input_file", None,
                    "Pretraining records: a glob or a comma-separated list of "
                    "globs.")
flags.DEFINE_string("output_file", None,
                    "One output TFRecord file for all inputs, in input order. "
                    "Give this or --output_dir.")
flags.DEFINE_string("output_dir", None,
                    "Write one output per input file here, with the input's "
                    "base name, and beside it <name>.made_from.json (its "
                    "input, teacher and label settings); a rerun skips an "
                    "output made as that record says, and makes again one "
                    "made from other inputs, teacher or settings.")
flags.DEFINE_enum("label_mode", label_settings.TOP_K,
                  list(label_settings.LABEL_MODES),
                  "What to keep of the teacher's softmax: top_k (its k most "
                  "probable tokens, the original's), full (all of it) or "
                  "sampled (--num_samples draws from it, unbiased).")
flags.DEFINE_integer("truncation_factor", 10,
                     "k: teacher probabilities (top_k) or distinct sampled "
                     "ids (sampled) kept per masked position. 0 with top_k "
                     "keeps the whole distribution (= --label_mode full: "
                     "masked_lm_probs, P * vocab_size floats per example).")
flags.DEFINE_integer("num_samples", 16,
                     "sampled: N, draws with replacement per masked position.")
flags.DEFINE_float("sample_temperature", 1.0,
                   "sampled: T, draws come from softmax(logits / T); stage V "
                   "must distil at the same --temperature.")
flags.DEFINE_integer("exact_top_k", 0,
                     "sampled: keep the teacher's this many most probable "
                     "tokens exactly and draw the samples from the rest of "
                     "its distribution (0: sample it all).")
flags.DEFINE_integer("seed", 12345,
                     "sampled: seed of the draws (with the file name and the "
                     "record index).")
flags.DEFINE_integer("max_seq_length", 128,
                     "L of the input records. Must match data generation.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "P of the input records. Must match data generation.")
flags.DEFINE_integer("batch_size", 32,
                     "Examples per batch (over all GPUs together).")
flags.DEFINE_string("vocab_file", None,
                    "Optional: the teacher's vocab.txt, checked against the "
                    "config's vocab_size.")
flags.adopt_module_key_flags(shard_flags)
flags.DEFINE_integer("length_multiple", 16,
                     "Each batch is cut to its longest real sequence rounded "
                     "up to this multiple (fewer XLA shapes); 0 never cuts.")
flags.DEFINE_integer("sort_batches", 8,
                     "Sort each run of this many batches by length before "
                     "cutting them, so short examples batch together (the "
                     "output keeps input order); 1 = no sorting.")
flags.DEFINE_enum("use_xla", "auto", ["auto", "true", "false"],
                  "Compile forward pass, softmax and top-k with XLA. auto: "
                  "on with GPUs or a TPU, off on CPUs (where the plain graph "
                  "measured faster; docs/performance.md), as distill.py.",
                  case_sensitive=False)
flags.DEFINE_enum("precision", "float32",
                  ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Compute dtype of the teacher (distill.py's "
                  "--teacher_precision): mixed_bfloat16 is about twice as "
                  "fast where the CPU has AMX or AVX512-BF16 units or the GPU "
                  "bfloat16 ones. The variables, the softmax and every label "
                  "statistic stay float32.")
flags.DEFINE_integer("max_records", 0,
                     "Label only the first this many records of each input "
                     "file (0: all), e.g. a held-out sample in full mode.")
flags.DEFINE_float("progress_interval", 30.0,
                   "Seconds between progress lines.")

flags.mark_flags_as_required(["init_checkpoint", "input_file"])
flags.register_validator("truncation_factor", lambda k: k >= 0,
                         "--truncation_factor must be >= 0")
flags.register_validator("num_samples", lambda v: v >= 1,
                         "--num_samples must be >= 1")
flags.register_validator("exact_top_k", lambda v: v >= 0,
                         "--exact_top_k must be >= 0")
flags.register_validator("sample_temperature", lambda v: v > 0,
                         "--sample_temperature must be > 0")
flags.register_multi_flags_validator(
    ["label_mode", "truncation_factor"],
    lambda f: f["label_mode"] != "sampled" or f["truncation_factor"] >= 1,
    "--label_mode sampled needs --truncation_factor (k slots) >= 1")
flags.register_multi_flags_validator(
    ["label_mode", "exact_top_k"],
    lambda f: f["label_mode"] == "sampled" or f["exact_top_k"] == 0,
    "--exact_top_k applies to --label_mode sampled only")
flags.register_validator("max_seq_length", lambda v: v > 0,
                         "--max_seq_length must be positive")
flags.register_validator("max_predictions_per_seq", lambda v: v > 0,
                         "--max_predictions_per_seq must be positive")
flags.register_validator("max_records", lambda v: v >= 0,
                         "--max_records must be >= 0")
flags.register_validator("batch_size", lambda v: v > 0,
                         "--batch_size must be positive")
flags.register_validator("sort_batches", lambda v: v >= 1,
                         "--sort_batches must be >= 1")
flags.register_validator("length_multiple", lambda v: v >= 0,
                         "--length_multiple must be >= 0")
flags.register_multi_flags_validator(
    ["output_file", "output_dir"],
    lambda f: (f["output_file"] is None) != (f["output_dir"] is None),
    "give exactly one of --output_file and --output_dir")


def main(argv):
  del argv  # Unused.
  config_file = checkpoints.companion_file(
      FLAGS.bert_config_file, FLAGS.init_checkpoint, "config",
      "--bert_config_file", "--init_checkpoint")
  config = teacher_labels.read_labelling_teacher_config(
      config_file, FLAGS.max_seq_length, FLAGS.truncation_factor, FLAGS.vocab_file)
  settings = label_settings.from_flags(
      FLAGS.label_mode, FLAGS.truncation_factor, FLAGS.num_samples,
      FLAGS.sample_temperature, config.vocab_size, FLAGS.exact_top_k)
  logging.info("Label mode: %s", settings.describe())
  input_files = cli.select_shard(cli.expand_input_files(FLAGS.input_file),
                                 FLAGS.num_shards, FLAGS.shard_index)
  sources = label_provenance.label_sources(
      config_file, FLAGS.init_checkpoint, settings, FLAGS.seed,
      FLAGS.max_records, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
      FLAGS.precision)
  plan = teacher_labels.plan_outputs(input_files, FLAGS.output_file,
                                     FLAGS.output_dir, sources)
  logging.info("Shard %d of %d: %d input files, %d outputs to write",
               FLAGS.shard_index, FLAGS.num_shards, len(input_files), len(plan))
  if not plan:
    return
  feature_spec = records.pretraining_feature_spec(
      FLAGS.max_seq_length, FLAGS.max_predictions_per_seq)
  teacher_labels.check_input_lengths(
      [path for paths, _ in plan for path in paths], feature_spec,
      FLAGS.max_predictions_per_seq)

  strategy = distribution.local_strategy()
  if FLAGS.batch_size % strategy.num_replicas_in_sync:
    raise cli.StageError(
        f"--batch_size {FLAGS.batch_size} is not a multiple of the "
        f"{strategy.num_replicas_in_sync} GPUs")
  try:
    model = checkpoints.load_teacher(strategy, config, FLAGS.init_checkpoint,
                                     FLAGS.precision)
  except ValueError as e:
    raise cli.StageError(f"--init_checkpoint: {e}") from None
  use_xla = distill_training.use_xla(FLAGS.use_xla.lower())
  logging.info("Teacher precision %s, XLA %s", FLAGS.precision,
               "on" if use_xla else "off")
  labeler = teacher_labels.TeacherLabeler(
      model, FLAGS.truncation_factor, strategy, use_xla, settings.mode,
      settings.temperature, settings.head_k)
  bounds = records.value_bounds(config.vocab_size, config.type_vocab_size,
                                FLAGS.max_seq_length)
  for paths, output_path in plan:
    logging.info("Labelling %s -> %s", ", ".join(paths), output_path)
    try:
      teacher_labels.write_teacher_labels(
          labeler, paths, output_path, feature_spec, FLAGS.truncation_factor,
          FLAGS.batch_size, FLAGS.length_multiple, FLAGS.sort_batches, bounds,
          FLAGS.progress_interval, settings, FLAGS.seed, FLAGS.max_records,
          sources)
    except teacher_labels.NonFiniteLogitsError as e:
      raise cli.StageError(f"--init_checkpoint {FLAGS.init_checkpoint}: {e}; "
                           f"is the teacher sound?") from None


if __name__ == "__main__":
  cli.run(main, stop_at_safe_points=True)
