"""Exports a BERT checkpoint (Google's names; a pretrained, distilled or
fine-tuned one) as a TF SavedModel for serving.

  python export_model.py --checkpoint=sst2_output \\
    --bert_config_file=sst2_output/bert_config.json \\
    --vocab_file=vocab.txt --export_dir=sst2_saved_model

The `serving_default` signature maps int32 input_ids, input_mask,
segment_ids [batch, length] to pooled_output, sequence_output and, for a
checkpoint with run_classifier.py's head, logits and probabilities.
tf.saved_model.load reads it without this project's code. export_dir also
gets vocab.txt, bert_config.json and config.json (transformers' BertConfig
keys), and appears only once complete.
"""

import os

from absl import flags

from bert_distill import cli
import modeling
from bert_distill import serving
import tokenization

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint", None,
                    "The checkpoint: a prefix (model.ckpt-123, "
                    "bert_model.ckpt) or a folder (its newest checkpoint).")
flags.DEFINE_string("bert_config_file", None,
                    "The checkpoint's bert_config.json.")
flags.DEFINE_string("export_dir", None,
                    "The SavedModel folder to create; must not exist.")
flags.DEFINE_string("vocab_file", None,
                    "Optional: the vocabulary, copied next to the model; "
                    "its size must be the config's vocab_size.")

flags.mark_flags_as_required(["checkpoint", "bert_config_file", "export_dir"])


def main(_):
  try:
    config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
  except ValueError as e:
    raise cli.StageError(f"--bert_config_file {e}") from None
  if FLAGS.vocab_file:
    if not os.path.isfile(FLAGS.vocab_file):
      raise cli.StageError(f"--vocab_file {FLAGS.vocab_file}: no such file")
    vocab_size = len(tokenization.load_vocab(FLAGS.vocab_file))
    if vocab_size != config.vocab_size:
      raise cli.StageError(
          f"--vocab_file {FLAGS.vocab_file} holds {vocab_size} tokens but "
          f"--bert_config_file {FLAGS.bert_config_file} has vocab_size "
          f"{config.vocab_size}")
  try:
    serving.export(config, FLAGS.checkpoint, FLAGS.export_dir,
                   FLAGS.vocab_file)
  except ValueError as e:
    raise cli.StageError(str(e)) from None


if __name__ == "__main__":
  cli.run(main)
