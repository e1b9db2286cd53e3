"""Exports a BERT checkpoint (Google's names or an HF folder; a pretrained,
distilled or fine-tuned one) as a TF SavedModel for serving, or in
HuggingFace's layout (--format=huggingface).

  python export_model.py --checkpoint=sst2_output \\
    --bert_config_file=sst2_output/bert_config.json \\
    --vocab_file=vocab.txt --export_dir=sst2_saved_model

The `serving_default` signature maps int32 input_ids, input_mask,
segment_ids [batch, length] to pooled_output, sequence_output and, for a
checkpoint with run_classifier.py's head, logits and probabilities.
tf.saved_model.load reads it without this project's code. export_dir also
gets vocab.txt, bert_config.json and config.json (transformers' BertConfig
keys), and appears only once complete.

  python export_model.py --checkpoint=student_dir --format=huggingface \
    --export_dir=student_hf

writes config.json (the hidden_act that computes the model's GELU: Google's
tanh form is transformers' "gelu_new"), model.safetensors (transformers'
names: BertForPreTraining's with both pretraining heads, BertModel's without
heads, BertForSequenceClassification's with run_classifier.py's head) and
vocab.txt, for transformers' from_pretrained.
"""

import os

from absl import flags

from bert_distill import checkpoints
from bert_distill import cli
from bert_distill import model_config
from bert_distill import serving
import tokenization

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint", None,
                    "The checkpoint: a prefix (model.ckpt-123, "
                    "bert_model.ckpt) or a folder (its newest checkpoint).")
flags.DEFINE_string("bert_config_file", None,
                    "The checkpoint's bert_config.json (or HF config.json). "
                    "Default: the config beside --checkpoint.")
flags.DEFINE_string("export_dir", None,
                    "The SavedModel folder to create; must not exist.")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary, copied next to the model; its size must "
                    "be the config's vocab_size. Default: the vocab.txt "
                    "beside --checkpoint, if any.")
flags.DEFINE_enum("format", "saved_model", ["saved_model", "huggingface"],
                  "saved_model: a TF SavedModel; huggingface: config.json, "
                  "model.safetensors and vocab.txt (transformers' layout).")

flags.mark_flags_as_required(["checkpoint", "export_dir"])


def main(_):
  config_file = checkpoints.companion_file(
      FLAGS.bert_config_file, FLAGS.checkpoint, "config", "--bert_config_file",
      "--checkpoint")
  try:
    config = model_config.read_config(config_file)
  except ValueError as e:
    raise cli.StageError(f"--bert_config_file {e}") from None
  vocab_file = FLAGS.vocab_file or checkpoints.file_beside(FLAGS.checkpoint,
                                                           "vocab")
  if vocab_file:
    if not os.path.isfile(vocab_file):
      raise cli.StageError(f"--vocab_file {vocab_file}: no such file")
    try:
      vocab_size = len(tokenization.load_vocab(vocab_file))
    except ValueError as e:  # not UTF-8: names the file and the line
      raise cli.StageError(f"--vocab_file {e}") from None
    if vocab_size != config.vocab_size:
      raise cli.StageError(
          f"--vocab_file {vocab_file} holds {vocab_size} tokens but "
          f"--bert_config_file {config_file} has vocab_size "
          f"{config.vocab_size}")
  export = (serving.export_huggingface if FLAGS.format == "huggingface"
            else serving.export)
  try:
    export(config, FLAGS.checkpoint, FLAGS.export_dir, vocab_file)
  except ValueError as e:
    raise cli.StageError(str(e)) from None


if __name__ == "__main__":
  cli.run(main, stop_at_safe_points=True)
