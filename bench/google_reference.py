"""Loads Google's published BERT tokenizer (PyPI `bert-tensorflow`) if present.

It is an independent reference for tests' golden files and for benches; the
project never needs it. Install it into the bench virtualenv with
`.venv-bench/bin/pip install --no-deps bert-tensorflow==1.0.4`. From another
interpreter of the same Python version, the bench virtualenv's site-packages is
appended to sys.path (bert and six are pure Python).
"""

import glob
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_google_tokenization():
  """Returns Google's `bert.tokenization` module, or None when not installed."""
  try:
    importlib.import_module("bert")
  except ImportError:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for site in glob.glob(os.path.join(ROOT, ".venv-bench", "lib", version,
                                       "site-packages")):
      if os.path.isdir(os.path.join(site, "bert")):
        sys.path.append(site)
  try:
    module = importlib.import_module("bert.tokenization")
  except ImportError:
    return None
  # Its FullTokenizer reads an absl flag (--preserve_unused_tokens, default
  # False, our behaviour): let the flags count as parsed outside absl.app.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return module
