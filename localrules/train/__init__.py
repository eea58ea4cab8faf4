"""The trainer: two optimizers, schedules, delay, alternation, noisy updates, metrics, checkpoints.

Import ``localrules.train.trainer`` for ``Trainer``; this package's top level stays light.
"""
