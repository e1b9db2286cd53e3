"""HuggingFace's BERT layout: `config.json`, `model.safetensors`, `vocab.txt`.

This module holds the one map between HF's tensor names and Google's
variable names (NAME_MAP), read and written with the `safetensors` package's
NumPy API (no torch). What it maps:

- BertModel's names (`embeddings.*`, `encoder.layer.<i>.*`, `pooler.*`), and
  the same under `bert.` (BertForPreTraining, BertForMaskedLM,
  BertForSequenceClassification) -> `bert/...`;
- `cls.predictions.*` (masked-LM head), `cls.seq_relationship.*`
  (next-sentence head) -> `cls/...`; `classifier.*` (sequence
  classification) -> run_classifier.py's `output_weights` / `output_bias`;
- nn.Linear weights are [out, in], Google's dense kernels [in, out]: they are
  transposed. Embedding tables, `cls.seq_relationship.weight` [2, H] and
  `classifier.weight` [C, H] are stored the same way on both sides;
- LayerNorm `weight`/`bias` (and old releases' `gamma`/`beta`) -> `gamma`/`beta`;
- the masked-LM decoder is the word-embedding table (HF ties them):
  `cls.predictions.decoder.weight` may be absent; present, it must equal the
  table (an untied decoder cannot be honoured). `cls.predictions.decoder.bias`
  is HF's alias of `cls.predictions.bias`.

Names the map does not know (`embeddings.position_ids`, a sentence-
transformers pooling module's, ...) are reported as unused under their HF
names. SafetensorsReader reads a folder (or one .safetensors file, or a
sharded `model.safetensors.index.json`) with the interface checkpoints.py
uses of TensorFlow's checkpoint reader, so every stage that loads a
checkpoint reads this layout too; write_folder writes one. The config's
translation (config_from_hf_dict, hf_config_dict) lives here too: HF's
"gelu" is the exact form, Google's the tanh approximation.

This module defines no flags.
"""

import dataclasses
import json
import os
import re

import numpy as np

import modeling

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
VOCAB_FILE = "vocab.txt"

# An HF config.json's hidden_act -> ours. HF's "gelu" is exact (torch's erf
# GELU); "gelu_new", "gelu_pytorch_tanh" and "gelu_fast" are the tanh form.
HF_ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu",
                  "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                  "relu": "relu", "tanh": "tanh", "linear": "linear"}
# Ours -> the hidden_act HF's config.json needs for the same numerics.
TO_HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu",
                    "tanh": "tanh", "linear": "linear"}
# HF keys read as BertConfig fields or checked, and HF bookkeeping that does
# not change BERT's numerics: not kept in BertConfig.extra (which
# bert_config.json gets).
_HF_IGNORED_KEYS = (
    "model_type", "architectures", "transformers_version", "_name_or_path",
    "pad_token_id", "use_cache", "gradient_checkpointing", "torch_dtype",
    "classifier_dropout", "num_labels", "id2label", "label2id",
    "problem_type", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "output_past", "finetuning_task", "directionality", "pooler_fc_size",
    "pooler_num_attention_heads", "pooler_num_fc_layers",
    "pooler_size_per_head", "pooler_type", "dtype", "is_decoder",
    "add_cross_attention", "position_embedding_type")


def config_from_hf_dict(d):
  """The modeling.BertConfig of an HF `config.json` dict (transformers'
  BertConfig keys); raises ValueError (one line) for what it cannot honour:
  another model_type, a decoder, relative positions, an unknown hidden_act."""
  model_type = d.get("model_type", "bert")
  if model_type != "bert":
    raise ValueError(f"an HF config.json of model_type {model_type!r}; only "
                     f"'bert' is supported")
  if d.get("is_decoder") or d.get("add_cross_attention"):
    raise ValueError("an HF config.json of a decoder (is_decoder / "
                     "add_cross_attention); only BERT's encoder is supported")
  act = d.get("hidden_act", "gelu")
  if act not in HF_ACTIVATIONS:
    raise ValueError(f"HF hidden_act {act!r} is not supported; use one of "
                     f"{', '.join(HF_ACTIVATIONS)}")
  names = [f.name for f in dataclasses.fields(modeling.BertConfig)
           if f.name != "extra"]
  known = {k: v for k, v in d.items() if k in names}
  known["hidden_act"] = HF_ACTIVATIONS[act]
  # Google's modeling.py has no default for these; HF's BertConfig has.
  known.setdefault("type_vocab_size", 2)
  extra = {k: v for k, v in d.items()
           if k not in names and k not in _HF_IGNORED_KEYS}
  position_type = d.get("position_embedding_type", "absolute")
  if position_type != "absolute":
    extra["position_embedding_type"] = position_type  # BertConfig refuses it
  return modeling.BertConfig(**known, extra=extra)


def hf_config_dict(config, architectures=("BertModel",)):
  """`config` as HuggingFace's `config.json` dict (transformers' BertConfig
  keys), with the hidden_act that computes the same function."""
  return {
      "model_type": "bert",
      "architectures": list(architectures),
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_hidden_layers,
      "num_attention_heads": config.num_attention_heads,
      "intermediate_size": config.intermediate_size,
      "hidden_act": TO_HF_ACTIVATION[config.hidden_act],
      "hidden_dropout_prob": config.hidden_dropout_prob,
      "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
      "max_position_embeddings": config.max_position_embeddings,
      "type_vocab_size": config.type_vocab_size,
      "initializer_range": config.initializer_range,
      "layer_norm_eps": config.layer_norm_eps,
      "pad_token_id": 0,
      "position_embedding_type": "absolute",
  }


def _name_map():
  """[(Google pattern, HF pattern, transposed)]; `{L}` is a layer number.

  HF names of the encoder are given with the `bert.` prefix (BertFor*);
  BertModel's names are the same without it.
  """
  dense = [("bert/encoder/layer_{L}/attention/self/" + p,
            "bert.encoder.layer.{L}.attention.self." + p)
           for p in ("query", "key", "value")]
  dense += [
      ("bert/encoder/layer_{L}/attention/output/dense",
       "bert.encoder.layer.{L}.attention.output.dense"),
      ("bert/encoder/layer_{L}/intermediate/dense",
       "bert.encoder.layer.{L}.intermediate.dense"),
      ("bert/encoder/layer_{L}/output/dense",
       "bert.encoder.layer.{L}.output.dense"),
      ("bert/pooler/dense", "bert.pooler.dense"),
      ("cls/predictions/transform/dense", "cls.predictions.transform.dense"),
  ]
  layer_norms = [
      ("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm"),
      ("bert/encoder/layer_{L}/attention/output/LayerNorm",
       "bert.encoder.layer.{L}.attention.output.LayerNorm"),
      ("bert/encoder/layer_{L}/output/LayerNorm",
       "bert.encoder.layer.{L}.output.LayerNorm"),
      ("cls/predictions/transform/LayerNorm",
       "cls.predictions.transform.LayerNorm"),
  ]
  entries = [
      ("bert/embeddings/word_embeddings",
       "bert.embeddings.word_embeddings.weight", False),
      ("bert/embeddings/token_type_embeddings",
       "bert.embeddings.token_type_embeddings.weight", False),
      ("bert/embeddings/position_embeddings",
       "bert.embeddings.position_embeddings.weight", False),
      ("cls/predictions/output_bias", "cls.predictions.bias", False),
      ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight",
       False),
      ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False),
      ("output_weights", "classifier.weight", False),
      ("output_bias", "classifier.bias", False),
  ]
  for google, hf in dense:
    entries += [(google + "/kernel", hf + ".weight", True),
                (google + "/bias", hf + ".bias", False)]
  for google, hf in layer_norms:
    entries += [(google + "/gamma", hf + ".weight", False),
                (google + "/beta", hf + ".bias", False)]
  return entries


NAME_MAP = _name_map()


def _compile(pattern):
  parts = [re.escape(p) for p in pattern.split("{L}")]
  return re.compile("^" + r"(\d+)".join(parts) + "$")


_FROM_HF = [(_compile(hf), google, transposed)
            for google, hf, transposed in NAME_MAP]
_FROM_GOOGLE = [(_compile(google), hf, transposed)
                for google, hf, transposed in NAME_MAP]
# HF aliases: old releases' LayerNorm gamma/beta, the tied decoder's bias.
_HF_ALIASES = ((re.compile(r"\.LayerNorm\.gamma$"), ".LayerNorm.weight"),
               (re.compile(r"\.LayerNorm\.beta$"), ".LayerNorm.bias"),
               (re.compile(r"^cls\.predictions\.decoder\.bias$"),
                "cls.predictions.bias"))
TIED_DECODER = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS = "bert/embeddings/word_embeddings"


def _substitute(template, match):
  return template.replace("{L}", match.group(1)) if match.groups() else template


def google_name(hf_name):
  """(Google name, transposed) of an HF tensor name, or None when the map
  does not know it. Accepts names with and without the `bert.` prefix."""
  name = hf_name
  for pattern, replacement in _HF_ALIASES:
    name = pattern.sub(replacement, name)
  if not name.startswith(("bert.", "cls.", "classifier.")):
    name = "bert." + name
  for pattern, google, transposed in _FROM_HF:
    match = pattern.match(name)
    if match:
      return _substitute(google, match), transposed
  return None


def hf_name(google, prefix=True):
  """(HF name, transposed) of a Google variable name, or None. prefix=False
  gives BertModel's names (no `bert.`) for `bert/` variables."""
  for pattern, hf, transposed in _FROM_GOOGLE:
    match = pattern.match(google)
    if match:
      name = _substitute(hf, match)
      if not prefix and name.startswith("bert."):
        name = name[len("bert."):]
      return name, transposed
  return None


def is_checkpoint(path):
  """Whether `path` is HF's layout: a folder holding model.safetensors (or
  its sharded index), or a .safetensors file."""
  if os.path.isdir(path):
    return any(os.path.isfile(os.path.join(path, name))
               for name in (WEIGHTS_FILE, INDEX_FILE))
  return path.endswith(".safetensors") and os.path.isfile(path)


def folder_of(path):
  """The folder of an HF checkpoint path (itself, or a file's folder)."""
  return path if os.path.isdir(path) else os.path.dirname(path) or "."


def _weight_files(path):
  """The safetensors files of a folder (model.safetensors, else the shards
  its index names) or of a file (itself)."""
  if not os.path.isdir(path):
    return [path]
  index = os.path.join(path, INDEX_FILE)
  if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)) and os.path.isfile(
      index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      return sorted({os.path.join(path, f) for f in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{index}: not a safetensors index ({e})") from None
  return [os.path.join(path, WEIGHTS_FILE)]


# The stored dtypes read (as float32); NumPy lacks bfloat16, _read widens it.
_FLOAT_DTYPES = ("F32", "F16", "F64", "BF16")


class SafetensorsReader:
  """An HF checkpoint under Google's names, read lazily.

  Offers what checkpoints.py uses of tf.train.load_checkpoint's reader:
  get_variable_to_shape_map, get_variable_to_dtype_map, has_tensor and
  get_tensor (float32, transposed to Google's [in, out] kernels).
  """

  def __init__(self, path):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    self.path = path
    files = _weight_files(path)
    self._sources = {}  # Google (or unknown HF) name -> (file, handle, HF name)
    self._transposed = {}
    self._shapes = {}
    self._dtypes = {}
    stored = {}  # HF name -> (file, handle, shape, dtype)
    for file in files:
      try:
        handle = safe_open(file, framework="np")
        for key in handle.keys():
          tensor = handle.get_slice(key)
          stored[key] = (file, handle, list(tensor.get_shape()),
                         tensor.get_dtype())
      except Exception as e:  # safetensors raises its own SafetensorError.
        raise ValueError(f"{file}: not a readable safetensors file "
                         f"({str(e).splitlines()[0] if str(e) else e})"
                         ) from None
    # Aliases last, so that a tensor under its own name wins.
    for key in sorted(stored, key=lambda k: k.endswith("decoder.bias")):
      file, handle, shape, dtype = stored[key]
      mapped = google_name(key)
      if key.endswith(TIED_DECODER) or key.endswith("position_ids"):
        continue  # checked below; a buffer, not a weight
      name, transposed = mapped or (key, False)
      if name in self._sources:
        if key.endswith("decoder.bias"):
          continue
        raise ValueError(f"{file}: {key} and {self._sources[name][2]} both "
                         f"map to {name}")
      self._sources[name] = (file, handle, key)
      self._transposed[name] = transposed
      self._shapes[name] = shape[::-1] if transposed else shape
      self._dtypes[name] = dtype
    self._check_tied_decoder(stored)

  def _check_tied_decoder(self, hf_shapes):
    """A stored decoder must be the word-embedding table: this model's
    masked-LM head has no decoder matrix of its own."""
    decoders = [k for k in hf_shapes if k.endswith(TIED_DECODER)]
    if not decoders or WORD_EMBEDDINGS not in self._sources:
      return
    decoder = _read(*hf_shapes[decoders[0]][:2], decoders[0],
                    hf_shapes[decoders[0]][3])
    if decoder.shape != tuple(self._shapes[WORD_EMBEDDINGS]) or not (
        np.array_equal(decoder, self.get_tensor(WORD_EMBEDDINGS).astype(
            decoder.dtype))):
      raise ValueError(f"{self.path}: {decoders[0]} differs from the word "
                       f"embeddings (an untied decoder); only BERT's tied "
                       f"masked-LM decoder is supported")

  def get_variable_to_shape_map(self):
    return dict(self._shapes)

  def get_variable_to_dtype_map(self):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return {name: tf.float32 if dtype in _FLOAT_DTYPES else tf.string
            for name, dtype in self._dtypes.items()}

  def has_tensor(self, name):
    return name in self._sources

  def get_tensor(self, name):
    """The tensor under a Google name: float32, kernels [in, out]."""
    file, handle, key = self._sources[name]
    value = _read(file, handle, key, self._dtypes[name])
    value = np.asarray(value, np.float32)
    return (np.ascontiguousarray(value.T) if self._transposed[name]
            else value)


def _read(file, handle, key, dtype):
  """One stored tensor as NumPy. bfloat16, which NumPy lacks, is read from
  the file's bytes (the safetensors layout: an 8-byte header length, the
  JSON header with each tensor's data_offsets, then the data) and widened to
  float32 exactly."""
  if dtype not in _FLOAT_DTYPES:
    raise ValueError(f"{file}: {key} has dtype {dtype}, not a float")
  if dtype != "BF16":
    return handle.get_tensor(key)
  with open(file, "rb") as f:
    header_size = int.from_bytes(f.read(8), "little")
    entry = json.loads(f.read(header_size))[key]
  begin, end = entry["data_offsets"]
  raw = np.fromfile(file, np.uint16, count=(end - begin) // 2,
                    offset=8 + header_size + begin)
  return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def hf_tensors(values_by_name, prefix=None):
  """{HF name: array} of {Google name: array} (kernels transposed).

  prefix: whether `bert/` variables get `bert.` (BertFor*); default: when
  a head (cls/ or the classifier) is among the names (BertModel otherwise).
  Names the map does not know are an error.
  """
  if prefix is None:
    prefix = any(not name.startswith("bert/") for name in values_by_name)
  tensors, unknown = {}, []
  for name, value in values_by_name.items():
    mapped = hf_name(name, prefix)
    if mapped is None:
      unknown.append(name)
      continue
    key, transposed = mapped
    value = np.asarray(value, np.float32)
    tensors[key] = np.ascontiguousarray(value.T if transposed else value)
  if unknown:
    raise ValueError(f"no HF name for {', '.join(sorted(unknown)[:5])}")
  return tensors


def architecture(names):
  """transformers' class whose names `names` (Google's) make up."""
  names = set(names)
  if "output_weights" in names:
    return "BertForSequenceClassification"
  has_mlm = any(n.startswith("cls/predictions/") for n in names)
  has_nsp = any(n.startswith("cls/seq_relationship/") for n in names)
  if has_mlm and has_nsp:
    return "BertForPreTraining"
  if has_mlm:
    return "BertForMaskedLM"
  return "BertModel"


def write_folder(directory, config, values_by_name, vocab_file=None,
                 extra_config=None):
  """Writes config.json, model.safetensors (and vocab.txt) into `directory`,
  which must exist (the caller renames a temporary folder into place).

  values_by_name: {Google name: array}. With cls/ heads the names are
  BertForPreTraining's (or BertForMaskedLM's), with a classifier head
  BertForSequenceClassification's, else BertModel's. The tied decoder is not
  stored (transformers ties it to the word embeddings on loading).
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  kind = architecture(values_by_name)
  d = hf_config_dict(config, [kind])
  d.update(extra_config or {})
  tensors = hf_tensors(values_by_name, prefix=kind != "BertModel")
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  save_file(tensors, weights_path, metadata={"format": "pt"})
  # save_file creates the file owner-only (0600); give it the umask's mode
  # like the files beside it.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(weights_path, 0o666 & ~umask)
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    f.write(json.dumps(d, indent=2, sort_keys=True) + "\n")
  if vocab_file:
    with open(vocab_file, "rb") as src, open(
        os.path.join(directory, VOCAB_FILE), "wb") as dst:
      dst.write(src.read())
  return kind
