"""The trainer: a training loop (``trainer``) and its parts — the state it trains (``state``),
the data stream (``stream``), the step plan (``schedule``), the compiled steps (``steps``),
checkpoints (``checkpoints``), and the callbacks around the loop: validation (``evaluation``),
history (``history``), weight snapshots and progress (``callbacks``).

Import ``localrules.train.trainer`` for ``Trainer``; this package's top level stays light.
"""
