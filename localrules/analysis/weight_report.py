"""What a run's files say about its weights (appendix C): per-layer angle between W and B and
‖B‖_F/‖W‖_F over training (from ``history.jsonl``, plus the snapshot taken at initialisation),
and sampled (W_ij, B_ji) pairs at chosen validation points (from ``weights/``).

Reads local paths directly and gs:// through ``tf.io.gfile`` (TensorFlow is imported only for
a remote path); never needs the checkpoint or a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localrules.runs import WEIGHTS, RunDirectory, read_bytes
from localrules.snapshots import list_snapshots, read_snapshot


@dataclass(frozen=True)
class WeightHistory:
    """Per-layer metrics at each validation point; layers shallow to deep."""

    run_dir: str
    epochs: list[int]
    layers: list[str]
    angles: dict[str, list[float | None]]
    norm_ratios: dict[str, list[float | None]]

    def rows(self) -> list[dict[str, Any]]:
        return [{"epoch": e, "layer": name, "depth": d + 1,
                 "weight_angle_deg": self.angles[name][i],
                 "norm_ratio": self.norm_ratios[name][i]}
                for i, e in enumerate(self.epochs) for d, name in enumerate(self.layers)]


def _history_records(run_dir: str) -> list[dict[str, Any]]:
    run = RunDirectory(run_dir)
    try:
        return run.read_history()
    except FileNotFoundError:
        raise ValueError(f"{run.history} not found: is {run_dir!r} a run directory?") from None


def _run_rule_kind(run_dir: str) -> str | None:
    """The rule kind in the run's config file (None when it cannot be read)."""
    try:
        config = json.loads(read_bytes(RunDirectory(run_dir).config).decode("utf-8"))
        return config["rule"]["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weight_history(run_dir: str) -> WeightHistory:
    """The run's layer metrics at every validation point, with the initial weights' metrics
    (epoch 0) when the run kept a snapshot of them. ValueError if there is nothing yet."""
    points: list[tuple[int, dict[str, dict[str, Any]]]] = [
        (int(r["epoch"]), r["layers"]) for r in _history_records(run_dir) if r.get("layers")]
    initial = list_snapshots(run_dir).get(0)
    if initial is not None:
        snap = read_snapshot(initial)
        points.insert(0, (0, {name: {"weight_angle_deg": s.angle_deg,
                                     "norm_ratio": s.norm_ratio}
                              for name, s in snap.layers.items()}))
    if not points:
        if _run_rule_kind(run_dir) == "backprop":
            raise ValueError(f"run {run_dir!r} trains by backprop, which sends errors through "
                             "Wᵀ: there are no separate backward weights to compare")
        raise ValueError(f"run {run_dir!r} has no validation point with layer metrics yet")
    layers = list(points[-1][1])
    return WeightHistory(
        run_dir, [e for e, _ in points], layers,
        {n: [m.get(n, {}).get("weight_angle_deg") for _, m in points] for n in layers},
        {n: [m.get(n, {}).get("norm_ratio") for _, m in points] for n in layers})


def default_epochs(available: Sequence[int], count: int = 4) -> list[int]:
    """Up to ``count`` snapshot epochs spread over training, first and last included."""
    available = sorted(available)
    if len(available) <= count:
        return available
    picks = {available[round(i * (len(available) - 1) / (count - 1))] for i in range(count)}
    return sorted(picks)


def scatter_samples(run_dir: str, layer: str | None, epochs: Sequence[int] | None
                    ) -> tuple[str, list[tuple[str, Any, Any]]]:
    """(layer, [(label, w, b), ...]) for the weight scatter. The layer defaults to the third
    in model order (the paper's Fig. S3 shows ResNet-18's third convolution); epochs default to
    up to four snapshots spread over training. ValueError naming what is available otherwise."""
    found = list_snapshots(run_dir)
    if not found:
        raise ValueError(f"run {run_dir!r} has no weight snapshots "
                         f"({WEIGHTS}/epoch-*.npz)")
    wanted = list(epochs) if epochs else default_epochs(list(found))
    missing = [e for e in wanted if e not in found]
    if missing:
        raise ValueError(f"no weight snapshot at epoch(s) {', '.join(map(str, missing))}; "
                         f"available: {', '.join(map(str, found))}")
    snapshots = [read_snapshot(found[e]) for e in wanted]
    names = list(snapshots[-1].layers)
    chosen = layer if layer is not None else names[min(2, len(names) - 1)]
    if chosen not in names:
        raise ValueError(f"no layer {chosen!r} in the snapshots; layers: {', '.join(names)}")
    if not len(snapshots[-1].layers[chosen].positions):
        raise ValueError(f"run {run_dir!r} kept no weight pairs (its weight_samples is 0): "
                         "only the angle and norm figures can be drawn")
    out = []
    for snap in snapshots:
        s = snap.layers[chosen]
        label = "initialisation" if snap.epoch == 0 else f"epoch {snap.epoch}"
        out.append((f"{label} ({s.angle_deg:.1f}°)", s.w, s.b))
    return chosen, out
