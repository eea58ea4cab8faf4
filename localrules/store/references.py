"""Reference runs, and the gap a trial closes between backprop and feedback alignment.

Every experiment trains reference rules (bp and fa by default) under its own budget and seed,
so that a trial's objective can be read against them: ``gap_closed = (objective − fa) /
(bp − fa)`` is 0 at feedback alignment and 1 at backprop. A reference run is a trial document
whose ``reference`` field says which rule and replicate it is, and its key:

- the **key** hashes the run's whole config (rule, budget, schedule, seed) with the code version,
  so two experiments whose references share a key share the run: the later one copies the
  finished result (its ``result.reused_from`` names the run that trained) instead of training it
  again, and a store-wide lock on the key keeps two workers from training it at once (``claim``);
- a reference is never given to TPE, not counted in ``max_trials``, and left out of the best
  trial, the importance analysis and the progress curve (which draws it as a line);
- ``gap_closed`` is derived when read, from the experiment's finished references (the mean over
  replicates), so it is right whichever finishes first, and None — with the reason — while one is
  missing or when bp − fa is below ``MIN_GAP`` (too close for a gap to mean anything);
- under multi-fidelity, a trial paused or stopped at a rung below the budget's epochs has no gap
  closed (``result_gap_closed``): the references train the full budget, so a rung-1 top-1 set
  against a 10-epoch bp measures the epochs it did not train, not a gap it closed.

Pure functions on documents plus one store lock; nothing here trains.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localrules.results import full_budget
from localrules.store.documents import DONE, HistoryEntry, Trial

MIN_GAP = 0.05
"""Below this bp − fa difference a gap closed is not reported."""
GAP_RULES = ("bp", "fa")
LOCK_PREFIX = "reference:"


def reference_key(config: Mapping[str, Any], code_version: str) -> str:
    """The identity of a reference run: its config (canonical JSON) and the code version."""
    text = json.dumps({"config": config, "code_version": code_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def reference_marker(rule: str, replicate: int, key: str) -> dict[str, Any]:
    """The ``reference`` field of a reference run's document."""
    return {"rule": rule, "replicate": replicate, "key": key}


@dataclass(frozen=True)
class ReferenceLevel:
    """One reference rule's finished replicates: mean objective, SEM (ddof 1; None with one),
    how many finished, and how many are still to come."""

    rule: str
    objective: float | None
    sem: float | None
    n: int
    pending: int

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "sem": self.sem, "n": self.n,
                "pending": self.pending}


@dataclass(frozen=True)
class References:
    """An experiment's references, by rule, and the gap between bp and fa."""

    levels: Mapping[str, ReferenceLevel]
    requested: tuple[str, ...]

    @property
    def gap(self) -> float | None:
        bp, fa = (self.levels.get(r) for r in GAP_RULES)
        if bp is None or fa is None or bp.objective is None or fa.objective is None:
            return None
        return bp.objective - fa.objective

    def gap_reason(self) -> str | None:
        """Why ``gap_closed`` is not available (None when it is)."""
        for rule in GAP_RULES:
            if rule not in self.levels:
                return f"no {rule} reference in this experiment (its references setting)"
        for rule in GAP_RULES:
            level = self.levels.get(rule)
            if level is None or level.objective is None:
                return f"the {rule} reference has not finished"
        if self.gap < MIN_GAP:
            return (f"bp − fa = {self.gap:.3f} is below {MIN_GAP}: the references are too "
                    "close for a gap to mean anything")
        return None

    def gap_closed(self, objective: float | None) -> float | None:
        """``(objective − fa) / (bp − fa)``, or None (see ``gap_reason``)."""
        if objective is None or self.gap_reason() is not None:
            return None
        return (objective - self.levels["fa"].objective) / self.gap

    def result_gap_closed(self, result: Mapping[str, Any] | None) -> float | None:
        """The gap closed of a trial's result: only a full-budget result has one.

        References are full-budget runs; a result paused (or stopped) at a lower rung was
        trained for fewer epochs, and its distance to bp is mostly the epochs it has not
        trained yet, not a gap its rule leaves. Its rung objective is shown apart, never as a
        gap closed (``result_gap_reason`` says why)."""
        if not full_budget(result):
            return None
        return self.gap_closed((result or {}).get("objective"))

    def result_gap_reason(self, result: Mapping[str, Any] | None) -> str | None:
        """Why ``result_gap_closed`` is None for this result (None when it is not)."""
        if result is not None and not full_budget(result):
            rung = result.get("rung")
            at = "" if rung is None else f" {rung}"
            return (f"stopped at rung{at} below the budget's epochs: not a full-budget result "
                    "(references train the full budget)")
        if (result or {}).get("objective") is None:
            return "no objective"
        return self.gap_reason()

    def to_dict(self) -> dict[str, Any]:
        """``{rule: {objective, sem, n, pending}}`` plus the gap and, without one, why."""
        return {"rules": {rule: level.to_dict() for rule, level in self.levels.items()},
                "gap": self.gap, "gap_reason": self.gap_reason()}

    def describe(self) -> str:
        """One line for people: ``bp 0.978 ± 0.003 (n=3), fa 0.677; gap 0.301``."""
        parts = []
        for rule, level in self.levels.items():
            if level.objective is None:
                parts.append(f"{rule} pending")
                continue
            sem = f" ± {level.sem:.3f}" if level.sem is not None else ""
            n = f" (n={level.n}{', more to come' if level.pending else ''})" \
                if level.n > 1 or level.pending else ""
            parts.append(f"{rule} {level.objective:.4f}{sem}{n}")
        reason = self.gap_reason()
        gap = f"gap bp − fa {self.gap:.4f}" if reason is None else f"no gap closed: {reason}"
        return (", ".join(parts) or "none") + f"; {gap}"


def references_of(trials: Iterable[Trial | HistoryEntry],
                  requested: Sequence[str] | None = None) -> References:
    """The references among ``trials`` (any order): every requested rule appears, finished or
    not (without ``requested``: the rules the trials hold); failed and cancelled replicates
    count as neither."""
    trials = list(trials)
    if requested is None:
        requested = tuple(dict.fromkeys(t.reference.get("rule") for t in trials
                                        if isinstance(t.reference, Mapping)))
    objectives: dict[str, list[float]] = {rule: [] for rule in requested}
    pending: dict[str, int] = dict.fromkeys(requested, 0)
    for t in trials:
        if not isinstance(t.reference, Mapping):
            continue
        rule = t.reference.get("rule")
        objective = (t.result or {}).get("objective")
        if t.state == DONE and isinstance(objective, (int, float)):
            objectives.setdefault(rule, []).append(float(objective))
            pending.setdefault(rule, 0)
        elif t.state in ("queued", "running"):
            pending[rule] = pending.get(rule, 0) + 1
            objectives.setdefault(rule, [])
    levels = {rule: _level(rule, values, pending.get(rule, 0))
              for rule, values in objectives.items()}
    return References(levels, tuple(requested))


def _level(rule: str, values: list[float], pending: int) -> ReferenceLevel:
    if not values:
        return ReferenceLevel(rule, None, None, 0, pending)
    sem = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return ReferenceLevel(rule, statistics.fmean(values), sem, len(values), pending)


def requested_references(experiment) -> tuple[str, ...]:
    """The reference rules an experiment asked for (its settings; an experiment stored before
    references existed asked for none)."""
    return tuple(experiment.settings.get("references", ()))


def search_trials(trials: Iterable[Trial | HistoryEntry]) -> list:
    """The trials TPE suggested (or warm starts): everything but the reference runs."""
    return [t for t in trials if t.reference is None]


def finished_run(store, key: str) -> Trial | None:
    """A finished reference run with this key (one that trained before one that was copied),
    or None."""
    done = [r for r in store.reference_runs(key) if r.state == DONE and r.result is not None]
    done.sort(key=lambda r: "reused_from" in r.result)
    return done[0] if done else None


def reused_result(source: Trial) -> dict[str, Any]:
    """The result a reference run gets by copying ``source`` (a finished run with its key):
    ``reused_from`` names the run that trained."""
    origin = source.result.get("reused_from") or {"experiment": source.experiment,
                                                  "trial_id": source.trial_id}
    return {**source.result, "reused_from": dict(origin)}


def claim(store, key: str, owner: str, seconds: float) -> bool:
    """Take (or renew) the store-wide lock that lets one process train the reference ``key``."""
    return store.acquire_lock(LOCK_PREFIX + key, owner, seconds)


def release(store, key: str, owner: str) -> None:
    store.release_lock(LOCK_PREFIX + key, owner)
