"""The library behind the stage scripts: what the scripts import and tests check.

Flat inside, one module per concept (see docs/architecture.md). The model,
tokenizer and optimizer stay at the top level as Google's `modeling.py`,
`tokenization.py` and `optimization.py`; nothing here defines flags.
"""

import os

from bert_distill import tensorflow_startup

# TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, CPU instructions)
# would come before a stage's own log: hidden unless the user set the level
# (TF_CPP_MIN_LOG_LEVEL=0 brings them back). TensorFlow reads it when it is
# first imported, and every stage script imports bert_distill before it.
# The CUDA lines of a machine without a GPU driver ignore the level: the
# first `import tensorflow` filters them (tensorflow_startup).
tensorflow_startup.install()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's default CPU allocator returns every large tensor to the
# operating system when it is freed, so each training step maps, faults in
# and zeroes its activations, gradients and Adam temporaries anew: on 2
# cores, fine-tuning all-MiniLM-L6-v2 spent a third of its time in the
# kernel (15 million page faults in 100 s). The BFC allocator, TensorFlow's
# allocator on GPUs, keeps freed blocks for the next step: 1.8x the
# fine-tuning rate there (docs/performance.md, "CPU memory allocator").
# TF_CPU_ALLOCATOR_USE_BFC=false brings the default back.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
