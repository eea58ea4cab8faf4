"""Weight snapshots: a fixed sample of each layer's (W_ij, B_ji) pairs at every validation point.

Checkpoints keep only the latest two states, but Fig. S3 compares a layer's forward and backward
weights at several points in training. So at the start of a run and at every validation the
trainer writes ``weights/epoch-NNNN.npz`` (NNNN the task epoch, 0000 before training) holding,
per asymmetric layer, the same ``weight_samples`` flat positions of W and of B in W's layout
(positions drawn once from the run's seed, so a dot in one snapshot is the same weight in the
next), plus the angle and ‖B‖_F/‖W‖_F computed on the full tensors. A ResNet-18 snapshot with
4,096 pairs per layer is ~0.7 MB.

With ``weight_samples`` 0 a snapshot keeps only the per-layer metrics (the initial angle and
norm ratio of Fig. S4), no pairs.

A neutral module, NumPy only, shared by the trainer that writes snapshots and the analysis that
reads them (which must not import TensorFlow): files go through ``runs`` (the run directory's
layout and file access; ``tf.io.gfile`` only for a remote path). Files are written to a temporary
name and renamed, so a report reading a running trial never sees half a file.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from localrules.runs import RunDirectory, listdir, makedirs, read_bytes, write_bytes_atomic

_NAME = re.compile(r"^epoch-(\d{4,})\.npz$")


def snapshot_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.npz"


def sample_positions(size: int, samples: int, seed: int, layer_index: int) -> np.ndarray:
    """The flat positions of a layer kept in every snapshot: all of them when the layer is
    small, else ``samples`` distinct positions drawn from (seed, layer index), sorted."""
    if size <= samples:
        return np.arange(size, dtype=np.int64)
    rng = np.random.default_rng([seed, layer_index, 0x5A3])
    return np.sort(rng.choice(size, samples, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class LayerSample:
    name: str
    shape: tuple[int, ...]
    positions: np.ndarray
    w: np.ndarray
    b: np.ndarray
    """B in W's layout at the same positions: (W_ij, B_ji) pairs."""
    angle_deg: float
    norm_ratio: float


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    step: int
    layers: dict[str, LayerSample]


def pack_snapshot(epoch: int, step: int, layers: Sequence[LayerSample]) -> bytes:
    """The .npz bytes of one snapshot (layers in model order, shallow to deep)."""
    arrays: dict[str, np.ndarray] = {
        "epoch": np.asarray(epoch), "step": np.asarray(step),
        "layers": np.asarray([s.name for s in layers], dtype=str),
        "angle_deg": np.asarray([s.angle_deg for s in layers], np.float64),
        "norm_ratio": np.asarray([s.norm_ratio for s in layers], np.float64),
    }
    for i, s in enumerate(layers):
        arrays[f"shape_{i}"] = np.asarray(s.shape, np.int64)
        arrays[f"positions_{i}"] = s.positions
        arrays[f"w_{i}"] = np.asarray(s.w, np.float32)
        arrays[f"b_{i}"] = np.asarray(s.b, np.float32)
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def unpack_snapshot(data: bytes, source: str = "snapshot") -> Snapshot:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = [str(n) for n in z["layers"]]
            layers = {
                name: LayerSample(name, tuple(int(d) for d in z[f"shape_{i}"]),
                                  z[f"positions_{i}"], z[f"w_{i}"], z[f"b_{i}"],
                                  float(z["angle_deg"][i]), float(z["norm_ratio"][i]))
                for i, name in enumerate(names)}
            return Snapshot(int(z["epoch"]), int(z["step"]), layers)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{source} is not a weight snapshot: {err}") from None


def list_snapshots(run_dir: str) -> dict[int, str]:
    """{epoch: path} of the snapshots a run has written (empty if none)."""
    folder = RunDirectory(run_dir).weights
    found = {int(m.group(1)): f"{folder}/{n}" for n in listdir(folder)
             if (m := _NAME.match(n))}
    return dict(sorted(found.items()))


def write_snapshot(run_dir: RunDirectory, epoch: int, step: int,
                   layers: Sequence[LayerSample]) -> None:
    """``weights/epoch-NNNN.npz`` of the run: every layer's metrics and sampled pairs."""
    makedirs(run_dir.weights)
    write_bytes_atomic(f"{run_dir.weights}/{snapshot_name(epoch)}",
                       pack_snapshot(epoch, step, layers))


def read_snapshot(path: str) -> Snapshot:
    return unpack_snapshot(read_bytes(path), path)


def layer_sample(name: str, w: np.ndarray, b: np.ndarray, positions: np.ndarray,
                 metrics: Mapping[str, float]) -> LayerSample:
    """One layer's entry from its full W and B (B in W's layout) and its weight metrics."""
    flat_w, flat_b = np.ravel(w), np.ravel(b)
    return LayerSample(name, tuple(np.shape(w)), positions, flat_w[positions],
                       flat_b[positions], float(metrics["weight_angle_deg"]),
                       float(metrics["norm_ratio"]))
