"""Multi-fidelity searches: asynchronous successive halving (ASHA) and asynchronous Hyperband,
with every decision kept in the trial documents.

**Rungs.** A search's rungs are ``min_epochs · η^k`` epochs below the budget's epochs, and the
budget's epochs last (``Fidelity.rungs``): with 1, η = 3 and 10 epochs, rungs at 1, 3, 9 and 10.
A search that does not give ``min_epochs`` starts past the budget's warm-up
(``first_rung_epochs``: 2 on digits, so rungs at 2, 6 and 10; 6 on the paper's ImageNet trial).
The learning-rate schedule of every trial is the full budget's from its first step, so a trial
that paused at a rung and is promoted continues exactly as if it had never paused.

**Brackets.** ASHA has one bracket: every trial starts at rung 0. Hyperband runs several at once:
bracket ``b`` starts its trials at rung ``b`` (the last bracket trains them fully from the start,
plain random/TPE search), guarding against a first rung too short to tell rules apart. A new
trial's bracket is drawn from the experiment's seed and the trial id with Hyperband's
proportions (bracket ``b`` with ``s = rungs - 1 - b`` halvings gets ``η^s / (s + 1)`` of the
trials, as in Li et al.'s Hyperband) and kept in its document, so a restarted controller never
draws it again.

**Promotion (ASHA's rule, Li et al. 2020).** A trial trains to its rung's epochs and reports.
Ranked on rung-k objectives among the trials of its bracket that reported at rung k, it is
promoted when it is in the top ``⌊n/η⌋`` (ties by trial id), else it stays paused: ``done`` with
``stopped_early`` and its rung results in ``result.rungs``. A paused trial may be promoted at a
later round, once enough other trials have reported at its rung. ``promotions`` decides from the
trial documents alone, so a restarted controller makes the same decisions; the store makes each
(``TrialStore.promote``: done → queued with the next rung, fenced by the attempt it read and by
the controller's lock). A promoted trial resumes from its own checkpoint on whichever worker
takes it. Diverged trials and reference runs are never promoted; warm starts and references
train fully (no rung).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localrules.store.documents import DONE, HistoryEntry
from localrules.validation import EPOCHS, Limit, check_choice

if TYPE_CHECKING:
    from localrules.spaces import Budget

FIDELITIES = ("none", "asha", "hyperband")
REDUCTION = Limit(2, 100, integer=True)
"""η: the fraction 1/η of a rung goes on to the next; η^k grows fast, so 100 is absurd already."""
BRACKETS = Limit(1, 64, integer=True)
SCHEDULERS = ("none", "asha")
"""The Ray engine's ``--scheduler`` (and the ``ray.scheduler`` Ray searches recorded before
``--fidelity`` existed): an alias of ``--fidelity`` none or asha with its defaults, min-epochs 1
and η 3, the grace period and reduction factor Ray's ASHA always had here."""


@dataclass(frozen=True)
class Fidelity:
    """How a search spends epochs: ``none`` (every trial trains the budget's epochs), ``asha``
    or ``hyperband`` (rungs from ``min_epochs``, reduction factor η, and for hyperband
    ``brackets``: how many, default all). A search opened without ``min_epochs`` gets
    ``first_rung_epochs`` of its budget (``search.session.resolve_settings``) and stores it."""

    kind: str = "none"
    min_epochs: int = 1
    reduction_factor: int = 3
    brackets: int | None = None

    def __post_init__(self) -> None:
        check_choice("fidelity", self.kind, FIDELITIES)
        EPOCHS.check("min_epochs", self.min_epochs)
        REDUCTION.check("reduction_factor", self.reduction_factor)
        if self.brackets is not None:
            BRACKETS.check("brackets", self.brackets)
            if self.kind != "hyperband":
                raise ValueError(f"--brackets is for --fidelity hyperband, not {self.kind}")
        if self.kind == "none" and (self.min_epochs, self.reduction_factor) != (1, 3):
            raise ValueError("--min-epochs and --reduction-factor shape the rungs of "
                             "--fidelity asha or hyperband; this search has none")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fidelity:
        from localrules.validation import dataclass_from_dict

        return dataclass_from_dict(cls, data, "fidelity")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    # --- rungs and brackets ---------------------------------------------------------------------
    def rungs(self, epochs: int) -> tuple[int, ...]:
        """Each rung's epochs under a budget of ``epochs``: ``min_epochs · η^k`` below it, then
        ``epochs`` (one rung, the budget, without a fidelity)."""
        if not self.enabled:
            return (epochs,)
        rungs, e = [], self.min_epochs
        while e < epochs:
            rungs.append(e)
            e *= self.reduction_factor
        return (*rungs, epochs)

    def check_budget(self, epochs: int) -> None:
        """ValueError unless the rungs fit a budget of ``epochs`` epochs."""
        if not self.enabled:
            return
        if self.min_epochs >= epochs:
            raise ValueError(f"--min-epochs {self.min_epochs} must be below the budget's "
                             f"{epochs} epochs per trial (the last rung), e.g. --min-epochs 1")
        if self.brackets is not None and self.brackets > len(self.rungs(epochs)) - 1:
            raise ValueError(f"--brackets {self.brackets}: a budget of {epochs} epochs from "
                             f"--min-epochs {self.min_epochs} with η {self.reduction_factor} has "
                             f"{len(self.rungs(epochs))} rungs, so at most "
                             f"{len(self.rungs(epochs)) - 1} brackets that halve")

    def bracket_count(self, epochs: int) -> int:
        """Brackets in use: 1 for ASHA; for Hyperband those asked for, by default one per rung
        below the last (every bracket halves at least once)."""
        if self.kind != "hyperband":
            return 1
        return self.brackets or len(self.rungs(epochs)) - 1

    def bracket_weights(self, epochs: int) -> list[float]:
        """Hyperband's share of trials per bracket: ``η^s / (s + 1)`` for a bracket of ``s``
        halvings, normalised."""
        last = len(self.rungs(epochs)) - 1
        raw = [self.reduction_factor ** (last - b) / (last - b + 1)
               for b in range(self.bracket_count(epochs))]
        return [w / sum(raw) for w in raw]

    def start(self, experiment_seed: int, trial_id: int, epochs: int) -> dict[str, int] | None:
        """A new search trial's fidelity document: its bracket (drawn from the seed and id),
        the bracket's first rung and its epochs; None without a fidelity."""
        if not self.enabled:
            return None
        import numpy as np

        weights = self.bracket_weights(epochs)
        draw = np.random.default_rng([experiment_seed, trial_id, 0xB4AC]).random()
        bracket = next((b for b, edge in enumerate(np.cumsum(weights)) if draw < edge),
                       len(weights) - 1)
        return {"bracket": bracket, "rung": bracket, "epochs": self.rungs(epochs)[bracket]}

    def describe(self, epochs: int) -> str:
        if not self.enabled:
            return "every trial trains the budget's epochs"
        text = (f"{self.kind}: rungs at {', '.join(map(str, self.rungs(epochs)))} epochs, the "
                f"top 1/{self.reduction_factor} of a rung promoted")
        if self.kind == "hyperband":
            text += f", {self.bracket_count(epochs)} brackets"
        return text


def scheduler_alias(scheduler: str | None, kind: str | None) -> str | None:
    """The fidelity kind a search is given when it may also be given the alias ``scheduler``
    (``SCHEDULERS``; None: not given): the alias's kind, or ``kind`` when they agree.
    ValueError when both are given and differ."""
    if scheduler is None:
        return kind
    check_choice("scheduler", scheduler, SCHEDULERS)
    if kind is not None and kind != scheduler:
        raise ValueError(f"--scheduler {scheduler} is the alias of --fidelity {scheduler}, "
                         f"which conflicts with --fidelity {kind}; give --fidelity alone")
    return scheduler


def first_rung_epochs(budget: Budget) -> int:
    """A new search's first rung when it does not say: the first whole epoch past the budget's
    learning-rate warm-up (at least 1, below the budget's epochs). Inside the warm-up no trial
    has trained at its full rate yet and rung objectives sit near chance: measured on digits
    (10 epochs, warm-up 1.33), 1-epoch objectives spread over 0.08–0.22 with chance 0.10, and
    ASHA from 1 epoch lost to plain TPE on every seed (docs/benchmarks.md, bench_fidelity)."""
    import math

    first = max(1, math.ceil(budget.warmup_epochs() - 1e-9))
    return min(first, max(1, budget.epochs - 1))


def settle_first_rung(fidelity: Mapping[str, Any] | None, budget: Budget) -> dict[str, Any]:
    """A new search's fidelity settings with ``min_epochs`` given its default from the budget
    (``first_rung_epochs``) when the search has rungs and does not say."""
    given = dict(fidelity or {})
    if given.get("kind") in (None, "none") or given.get("min_epochs") is not None:
        return given
    return {**given, "min_epochs": first_rung_epochs(budget)}


# --- decisions from the documents ---------------------------------------------------------------
def rung_points(result: Mapping[str, Any] | None) -> list[tuple[int, float]]:
    """A result's (rung, objective) points, by rung: its ``rungs``; a result with only a
    ``rung`` (Ray's ASHA) is one point there. Empty for a result without rungs."""
    if not result:
        return []
    points = [(r["rung"], r["objective"]) for r in result.get("rungs") or []
              if isinstance(r, Mapping) and isinstance(r.get("rung"), int)
              and isinstance(r.get("objective"), (int, float))]
    if not points and isinstance(result.get("rung"), int) \
            and isinstance(result.get("objective"), (int, float)):
        points = [(result["rung"], result["objective"])]
    return sorted(points)


def promotions(entries: Iterable[HistoryEntry], fidelity: Fidelity, epochs: int
               ) -> list[tuple[HistoryEntry, dict[str, int]]]:
    """The paused trials ASHA's rule promotes now, each with its next fidelity document.

    Rung k of bracket b holds every search trial of the bracket with a rung-k result (paused,
    promoted, finished or failed since: a result observed stays observed). A trial paused at
    rung k (done, ``stopped_early``, not diverged) is promoted when it is among the top
    ``⌊n/η⌋`` of the ``n`` there, ranked by objective, ties by trial id."""
    if not fidelity.enabled:
        return []
    rungs = fidelity.rungs(epochs)
    table: dict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
    paused: list[HistoryEntry] = []
    for entry in entries:
        if entry.reference is not None or entry.fidelity is None:
            continue
        bracket = entry.fidelity["bracket"]
        for rung, objective in rung_points(entry.result):
            table[bracket, rung].append((objective, entry.trial_id))
        result = entry.result or {}
        if entry.state == DONE and result.get("stopped_early") and not result.get("diverged") \
                and entry.fidelity["rung"] < len(rungs) - 1:
            paused.append(entry)
    chosen = []
    for entry in paused:
        bracket, rung = entry.fidelity["bracket"], entry.fidelity["rung"]
        ranked = sorted(table[bracket, rung], key=lambda p: (-p[0], p[1]))
        top = {tid for _, tid in ranked[:len(ranked) // fidelity.reduction_factor]}
        if entry.trial_id in top:
            chosen.append((entry, {"bracket": bracket, "rung": rung + 1,
                                   "epochs": rungs[rung + 1]}))
    return chosen
