"""A trial's learning curve, kept in its document (``Trial.curve``) so that a reader (the live
dashboard) draws it from the database alone, without the run's files.

``report_progress`` files each epoch's progress document under its epoch number as text
(``"1"``, ``"2"``, …): a re-run epoch (a resumed attempt) overwrites its entry, so a resumed run
never draws the same epoch twice. The curve is bounded by construction: of a run of ``epochs``
epochs only every ``stride``-th epoch and the last are kept, ``stride = ceil(epochs / 200)``, so
a trial holds at most ``MAX_CURVE_POINTS`` entries however long it trains (``validation.EPOCHS``
caps a run at 10,000 epochs). A progress document without the run's length keeps only its
first ``MAX_CURVE_POINTS`` epochs. Standard library only: the store and its readers share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_CURVE_POINTS = 200
"""The most entries a trial's curve holds (a run of any length)."""
LAYER_METRICS = ("weight_angle_deg", "norm_ratio")
"""The per-layer weight metrics an entry keeps (``train.metrics.weight_metrics``)."""


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curve_stride(epochs: int) -> int:
    """Every how many epochs a run of ``epochs`` epochs keeps an entry (its last is kept too)."""
    return max(1, math.ceil(epochs / MAX_CURVE_POINTS))


def kept_epoch(epoch: int, epochs: int | None) -> bool:
    """Whether the curve of a run of ``epochs`` epochs (None: unknown) keeps ``epoch``."""
    if epoch < 1:
        return False
    if epochs is None:
        return epoch <= MAX_CURVE_POINTS
    return epoch <= epochs and (epoch % curve_stride(epochs) == 0 or epoch == epochs)


def curve_entry(progress: Mapping[str, Any], attempt: int, at: float
                ) -> tuple[str, dict[str, Any]] | None:
    """The curve's key and entry for a progress document (``documents.progress_document``):
    ``{"epoch", "at", "attempt", "metrics", "layers"}``; None when the curve does not keep its
    epoch (or it has no epoch number)."""
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    if not _count(epoch):
        return None
    if not kept_epoch(epoch, epochs if _count(epochs) and epochs >= 1 else None):
        return None
    metrics = progress.get("metrics")
    metrics = {k: v for k, v in metrics.items() if v is None or _number(v)} \
        if isinstance(metrics, Mapping) else {}
    layers = progress.get("layers")
    layers = {name: {k: m.get(k) for k in LAYER_METRICS} for name, m in layers.items()
              if isinstance(m, Mapping)} if isinstance(layers, Mapping) else {}
    return str(epoch), {"epoch": epoch, "at": at, "attempt": attempt, "metrics": metrics,
                        "layers": layers}


def check_curve(curve: Mapping[str, Any]) -> None:
    """ValueError unless ``curve`` is a trial's curve: entries keyed by their epoch, each with
    its time, attempt, metrics (and layers) of the right types."""
    for key, entry in curve.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"trial document field 'curve' entry {key!r:.20} is not a mapping")
        epoch = entry.get("epoch")
        if not (_count(epoch) and key == str(epoch) and _number(entry.get("at"))
                and _count(entry.get("attempt")) and isinstance(entry.get("metrics"), Mapping)
                and isinstance(entry.get("layers", {}), Mapping)):
            raise ValueError(f"trial document field 'curve' entry {key!r:.20} is malformed: "
                             f"{dict(entry)!r:.200}")


def curve_points(curve: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The curve's entries by epoch."""
    return sorted(curve.values(), key=lambda entry: entry["epoch"])
