"""Timing that holds on a noisy, shared host: wall and process CPU time, per-round ratios, spread.

These machines have 2 cores shared with other people's work. A neighbour's load steals time from
the benchmark, which inflates its wall time but not the CPU time the process itself consumed
(``time.process_time`` counts every thread of the process, so TensorFlow's intra- and inter-op
pools are included). So the benchmarks record both for every timed block, interleave their
variants block by block so that load hits every variant alike, and compare each variant with the
baseline's block from the same round (blocks minutes apart see different neighbours). The spread
of those per-round ratios tells a reader how stable each ratio is.

Used by ``bench_train.py`` and ``bench_layers.py``; imported by path (``benchmarks/`` is not a
package), so it imports nothing outside the standard library.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """Seconds of one timed block: wall clock and the process's CPU time (all threads)."""

    wall: float
    cpu: float

    @property
    def utilisation(self) -> float:
        """CPU seconds per wall second: up to the cores the process can use; lower means the
        process waited (for a neighbour, for I/O, or for its own serial parts)."""
        return self.cpu / self.wall if self.wall > 0 else math.nan


def mark() -> Sample:
    """The clocks now (a point, not a duration: subtract two marks with ``since``)."""
    return Sample(time.perf_counter(), time.process_time())


def since(start: Sample) -> Sample:
    """The wall and CPU seconds elapsed since the mark ``start``."""
    now = mark()
    return Sample(now.wall - start.wall, now.cpu - start.cpu)


def rotated(items: Sequence[T], r: int) -> list[T]:
    """``items`` rotated left by ``r``: round ``r``'s order, so no variant always runs first or
    always right after the same neighbour."""
    if not items:
        return []
    k = r % len(items)
    return [*items[k:], *items[:k]]


def sig4(x: float) -> float:
    """``x`` rounded to 4 significant figures (enough for noisy timings, easy to read)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, 3 - math.floor(math.log10(abs(x))))


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min, quartiles (inclusive method, so a handful of values gives sensible quartiles),
    median and max, at 4 significant figures."""
    if not values:
        raise ValueError("spread of no values: at least one timed round is needed")
    ordered = sorted(values)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return {"min": sig4(ordered[0]), "q1": sig4(q1), "median": sig4(statistics.median(ordered)),
            "q3": sig4(q3), "max": sig4(ordered[-1])}


def ratio_report(rounds: Sequence[Mapping[str, Sample]], baseline: str) -> dict[str, Any]:
    """Each variant against ``baseline``, from rounds of interleaved blocks.

    ``rounds[i][variant]`` is variant's block in round ``i``; every round must hold the baseline
    and the same variants. Per variant: ``cpu`` and ``wall``, the spread of the per-round ratios
    (a block over the baseline's block of the same round); ``wall_min``, the fastest block over the
    baseline's fastest (interference only adds wall time, so minima are the classic estimate).
    """
    if not rounds:
        raise ValueError("ratio_report needs at least one round")
    names = list(rounds[0])
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the variants {names}")
    for i, blocks in enumerate(rounds):
        if list(blocks) != names:
            raise ValueError(f"round {i} holds {list(blocks)}, expected {names}")
    base_wall_min = min(r[baseline].wall for r in rounds)
    report: dict[str, Any] = {}
    for name in names:
        if name == baseline:
            continue
        report[name] = {
            "cpu": spread([r[name].cpu / r[baseline].cpu for r in rounds]),
            "wall": spread([r[name].wall / r[baseline].wall for r in rounds]),
            "wall_min": sig4(min(r[name].wall for r in rounds) / base_wall_min),
        }
    return report


def seconds_report(rounds: Sequence[Mapping[str, Sample]], name: str) -> dict[str, float]:
    """One variant's blocks: fastest and median wall, median CPU seconds, median utilisation."""
    blocks = [r[name] for r in rounds]
    return {
        "wall_min": sig4(min(b.wall for b in blocks)),
        "wall_median": sig4(statistics.median(b.wall for b in blocks)),
        "cpu_median": sig4(statistics.median(b.cpu for b in blocks)),
        "utilisation": sig4(statistics.median(b.utilisation for b in blocks)),
    }
