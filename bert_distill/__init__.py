"""The library behind the stage scripts: what the scripts import and tests check.

Flat inside, one module per concept (see docs/architecture.md). The model,
tokenizer and optimizer stay at the top level as Google's `modeling.py`,
`tokenization.py` and `optimization.py`; nothing here defines flags.
"""
