"""A finished trial's result document: one type, whichever engine trained the trial.

``TrainResult`` is what the trainer ends a run with; ``TrialResult`` extends it with what a
search needs (objective, chance level, time, where the files are, the code's version).

A store worker (``worker.trial_runner``) builds it from the trainer's outcome, the Ray engine's
store callback (``raytune.callback``) from the trial's last reported epoch; both write
``to_document()``, so the two documents cannot drift apart and every reader (``trials``, the
reports, TPE's history, the references) reads one schema. The Ray engine adds its own three
fields, which a worker's document leaves out.

Standard library only: the Ray driver imports it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from localrules import __version__
from localrules.jsonsafe import json_safe


def objective(top1: float | None, diverged: bool, chance: float) -> float:
    """What TPE (and ASHA) maximise: top-1, or chance level for a diverged or unscored run, so
    TPE learns that a region is bad instead of forgetting it."""
    return chance if diverged or top1 is None else float(top1)


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a training run ends with (``Trainer.fit``; ``localrules train`` prints it)."""

    top1: float | None
    top5: float | None
    eval_loss: float | None
    diverged: bool
    interrupted: bool
    """Stopped by a stop request (SIGTERM, a worker's stop) after a checkpoint."""
    epochs: int
    """Task epochs trained."""
    steps: int | None
    weight_angle_deg: Mapping[str, float] = field(default_factory=dict)
    """Each layer's B–W angle at the last validation; empty for backprop (no B of its own)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class TrialResult(TrainResult):
    """A trial's result: the run's outcome (every field of it, by inheritance) and what the
    search reads besides."""

    objective: float | None
    """Validation top-1 at the final epoch, chance level when diverged (``objective``); a
    reference run trained by Ray reports it apart from ASHA's metric, None if it never did."""
    chance: float | None
    seconds: float | None
    run_dir: str | None
    """Where the run's files are (a Ray trial's latest persisted checkpoint)."""
    code_version: str = __version__
    engine: str | None = None
    ray_trial_id: str | None = None
    stopped_early: bool | None = None
    """Stopped by ASHA before its last epoch (Ray only)."""

    ENGINE_FIELDS: ClassVar[tuple[str, ...]] = ("engine", "ray_trial_id", "stopped_early")
    """Written only by the engine that sets them (None: left out of the document)."""

    @classmethod
    def of_run(cls, outcome: TrainResult, *, chance: float, seconds: float,
               run_dir: str) -> TrialResult:
        """A worker's result from the trainer's outcome (NaN read as None)."""
        values = json_safe(outcome.to_dict())
        return cls(**values, chance=chance, seconds=seconds, run_dir=run_dir,
                   objective=objective(values["top1"], values["diverged"], chance))

    def to_document(self) -> dict[str, Any]:
        """The stored result: strict JSON (NaN/Inf as null), the engine's own fields only when
        set."""
        document = json_safe(self.to_dict())
        for name in self.ENGINE_FIELDS:
            if document[name] is None:
                del document[name]
        return document
