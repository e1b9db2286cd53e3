"""The library behind the stage scripts: what the scripts import and tests check.

Flat inside, one module per concept (see docs/architecture.md). The model,
tokenizer and optimizer stay at the top level as Google's `modeling.py`,
`tokenization.py` and `optimization.py`; nothing here defines flags.
"""

import os

# TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, CPU instructions)
# would come before a stage's own log: hidden unless the user set the level
# (TF_CPP_MIN_LOG_LEVEL=0 brings them back). TensorFlow reads it when it is
# first imported, and every stage script imports bert_distill before it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
