"""A finished trial's result document: one type, whichever engine trained the trial.

``TrainResult`` is what the trainer ends a run with; ``TrialResult`` extends it with what a
search needs (objective, chance level, time, where the files are, the code's version).

A store worker (``worker.trial_runner``) builds it from the trainer's outcome, the Ray engine's
store callback (``raytune.callback``) from the trial's last reported epoch; both write
``to_document()``, so the two documents cannot drift apart and every reader (``trials``, the
reports, TPE's history, the references) reads one schema. The Ray engine adds its own two
fields, which a worker's document leaves out; under multi-fidelity both write the rung fields.

Standard library only: the Ray driver imports it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import time
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
    trial_epochs: int | None = None
    """Epochs this trial has trained, every rung so far included (what a search spends: the
    x-axis that compares fidelities fairly); both engines write it."""
    rung: int | None = None
    """Under a multi-fidelity search, the rung this result is at (0: the first; the last is
    the budget's epochs). Both engines write it (``search.fidelity``)."""
    stopped_early: bool | None = None
    """Paused at a rung below the budget's epochs (the store engine's successive halving: it
    may still be promoted) or stopped there (Ray's ASHA): not a full-budget result, so never
    the best, nor used by gap closed and importance."""
    rungs: list[dict[str, Any]] | None = None
    """Every rung result so far, ``{"rung", "epochs", "objective", "finished_at"}`` by rung:
    successive halving ranks rung k on rung-k objectives, and the reports place each rung's
    epochs when they were spent (``finished_at``, Unix seconds)."""

    OPTIONAL_FIELDS: ClassVar[tuple[str, ...]] = (
        "engine", "ray_trial_id", "trial_epochs", "rung", "stopped_early", "rungs")
    """Written only when set (None: left out of the document): an engine's own, and the
    multi-fidelity ones."""

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
        for name in self.OPTIONAL_FIELDS:
            if document[name] is None:
                del document[name]
        return document


def at_rung(result: Mapping[str, Any], fidelity: Mapping[str, Any] | None,
            before: Mapping[str, Any] | None, full_epochs: int,
            finished_at: float | None = None) -> dict[str, Any]:
    """A store worker's result with its multi-fidelity fields: the trial's rung (its
    ``fidelity``), whether it paused below the budget's ``full_epochs``, every rung result so
    far (those of the result ``before`` this run, then this one, stamped ``finished_at``: now
    by default) and the epochs it has trained. Without a fidelity (a plain search, a reference
    run, a warm start) only ``trial_epochs``."""
    document = {**result, "trial_epochs": result.get("epochs")}
    if fidelity is None:
        return document
    rung, epochs = int(fidelity["rung"]), int(fidelity["epochs"])
    earlier = [r for r in (before or {}).get("rungs") or [] if r.get("rung", rung) < rung]
    diverged = bool(result.get("diverged"))
    return {**document, "rung": rung,
            "stopped_early": not diverged and epochs < full_epochs,
            "rungs": [*earlier, {"rung": rung, "epochs": epochs,
                                 "objective": result.get("objective"),
                                 "finished_at": time.time() if finished_at is None
                                 else finished_at}]}


def full_budget(result: Mapping[str, Any] | None) -> bool:
    """Whether a result is a full-budget one (not paused or stopped at a lower rung): what
    the best trial, gap closed and importance read."""
    return result is not None and not result.get("stopped_early")


def trial_epochs(result: Mapping[str, Any] | None) -> int:
    """The epochs a trial's result says it has trained, every rung so far included: its
    ``trial_epochs``, or ``epochs`` for a result written before that field (0 without a result
    or a count). What the reports add up as trial-epochs spent: the epochs of reported
    results, so a run still going (or one that failed before reporting) adds nothing yet."""
    if not result:
        return 0
    for key in ("trial_epochs", "epochs"):
        value = result.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0
