"""TPE's history from the store: hyperopt's ``Trials`` as it would be had TPE run in this
process the whole time, kept between suggestion rounds and updated by the store's changes.

Each stored trial keeps hyperopt's ``idxs``/``vals``; its loss is the negated objective (TPE
minimises, we maximise top-1). Queued and running trials go in as hyperopt's new/running jobs, so
they count towards the startup trials and enter TPE with infinite loss, as in hyperopt's own
asynchronous runs. Failed and cancelled trials are left out, as hyperopt's ``Trials.refresh``
would drop them: they are neither modelled nor counted towards the startup trials (a failure is
usually the machine's, not the configuration's). A diverged trial is ``done`` with a
chance-level objective and is modelled like any other. Reference runs never enter it.

**Multi-fidelity.** Under successive halving trials stop at different rungs, and objectives of
different rungs are not comparable (a 1-epoch top-1 is not a 10-epoch one). TPE only ranks
losses (its good set is the best ⌈γ√n⌉), so each trial is scored at one level: the highest rung
at which at least ``min_rung_results`` trials have reported (hyperopt's startup count: the
number of points TPE itself wants before it models), as BOHB models the largest budget with
enough observations. A trial with a result at that rung is scored by it (one that went past it
without reporting there, a warm start trained fully, by its lowest result above); a trial that
stopped below it ranks below every trial that reached it, by its highest rung and then its
objective there. That is ASHA's own verdict (a trial not promoted lost at its rung), so the
paused trials still teach TPE where not to look, where BOHB would drop them. A plain search has
one level (its full-budget results): losses are the negated objectives, as always. A promoted
trial, queued or running again, keeps its known rung results in the history.

``History`` is what a controller (or the Ray searcher) keeps: reading and decoding every trial
each round cost seconds at 10,000 trials, most of it hyperopt's checks of every document as it is
inserted. It reads only the trials written since its cursor (``TrialStore.changes``) and applies
them; ``rebuild`` makes the same ``Trials`` from scratch (the tests hold the two to identical
suggestions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from localrules.results import full_budget
from localrules.search.fidelity import rung_points
from localrules.spaces.nodes import plain
from localrules.store.documents import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    STATES,
    HistoryEntry,
    Trial,
    best_objective,
)

if TYPE_CHECKING:
    from localrules.spaces import Space

Entry = Trial | HistoryEntry

log = logging.getLogger(__name__)

DOMAIN_CMD = ("domain_attachment", "FMinIter_Domain")


FULL_BUDGET_LEVEL = 2**31
"""The level of a result without rungs: a full-budget one (a plain search, a warm start)."""
RUNG_GAP = 10.0
"""Loss added per rung a trial stopped below the scoring level (objectives are top-1, in
[0, 1]: a trial that reached a higher rung always ranks better)."""
MIN_RUNG_RESULTS = 20
"""hyperopt's default startup count: results a rung needs before TPE scores trials at it."""


def points(trial: Entry) -> list[tuple[int, float]]:
    """A trial's (level, objective) observations: its rung results, or its objective at the
    full-budget level; empty before it has one (pending, failed before a result)."""
    if trial.state in (FAILED, CANCELLED):
        return []
    found = rung_points(trial.result)
    objective = (trial.result or {}).get("objective")
    if found or objective is None or trial.state != DONE:
        return found
    return [(FULL_BUDGET_LEVEL, float(objective))]


def scoring_level(reached: Mapping[int, int], min_results: int) -> int:
    """The level trials are scored at, given how many trials' highest observation is at each
    level: the highest level that ``min_results`` trials reached, else the lowest observed."""
    total = 0
    for level in sorted(reached, reverse=True):
        total += reached[level]
        if total >= min_results:
            return level
    return min(reached, default=FULL_BUDGET_LEVEL)


def loss_at(observed: Sequence[tuple[int, float]], level: int) -> float:
    """TPE's loss of a trial's observations (by level) scored at ``level`` (module docstring)."""
    above = [(k, o) for k, o in observed if k >= level]
    if above:
        return -float(above[0][1])
    k, objective = observed[-1]
    return (level - k) * RUNG_GAP - float(objective)


def job(trial: Entry, space: Space | None = None, level: int = FULL_BUDGET_LEVEL
        ) -> tuple[int, dict[str, Any]] | None:
    """hyperopt's (state, result) of a stored search trial scored at ``level``, or None when
    it is not part of TPE's history (failed, cancelled, done without an objective, or without
    usable misc). A pending trial with rung results (a promoted one) is known at them."""
    from hyperopt import base as hyperopt

    if not usable(trial, space):
        return None
    observed = points(trial)
    if observed:
        return hyperopt.JOB_STATE_DONE, {"status": hyperopt.STATUS_OK,
                                         "loss": loss_at(observed, level)}
    state = {QUEUED: hyperopt.JOB_STATE_NEW, RUNNING: hyperopt.JOB_STATE_RUNNING}.get(trial.state)
    return None if state is None else (state, {"status": hyperopt.STATUS_NEW})


def hyperopt_misc_of(trial: Entry) -> dict[str, Any]:
    """The misc of a trial's hyperopt doc. Stored misc is plain JSON already; hyperopt only
    reads it (copies keep the store's apart)."""
    return {"tid": trial.trial_id, "cmd": DOMAIN_CMD, "workdir": None,
            "idxs": dict(trial.misc["idxs"]), "vals": dict(trial.misc["vals"])}


def hyperopt_doc(trials, trial: Entry,
                 state: tuple[int, dict[str, Any]] | None) -> dict[str, Any]:
    """The hyperopt trial document of a stored trial (``trials`` is the hyperopt Trials) in
    its ``job`` state; in hyperopt's error state when it is not part of TPE's history
    (``refresh`` drops it)."""
    from hyperopt import base as hyperopt

    state, result = state or (hyperopt.JOB_STATE_ERROR, {"status": hyperopt.STATUS_FAIL})
    (doc,) = trials.new_trial_docs([trial.trial_id], [None], [result],
                                   [hyperopt_misc_of(trial)])
    doc["state"] = state
    return doc


def usable(trial: Entry, space: Space | None = None) -> bool:
    """Whether a stored trial belongs in the history: failed and cancelled ones do not
    (hyperopt's refresh would drop them), nor any whose misc hyperopt cannot read (a tampered
    document, or one of a buggy old version, must not stop the search: it is left out with a
    warning naming it)."""
    if trial.state in (FAILED, CANCELLED):
        return False
    problem = misc_problem(trial, space)
    if problem is not None:
        log.warning("trial %s left out of TPE's history: %s", trial.trial_id, problem)
    return problem is None


def misc_problem(trial: Entry, space: Space | None = None) -> str | None:
    """Why hyperopt could not read a stored trial's misc (None: it can): ``idxs``/``vals``
    mappings naming the same labels, each label's lists of one length, ``[]`` or ``[tid]``
    (hyperopt asserts that, bare), values finite numbers; with the ``space``, vals it would
    make itself (every label, in range: what ``tpe.suggest`` reads)."""
    misc = trial.misc
    idxs, vals = (misc.get("idxs"), misc.get("vals")) if isinstance(misc, Mapping) else (0, 0)
    if not (isinstance(idxs, Mapping) and isinstance(vals, Mapping)):
        return "its misc has no idxs and vals mappings"
    if set(idxs) != set(vals):
        return "its misc's idxs and vals name different labels"
    for label, ids in idxs.items():
        got = vals[label]
        if not (isinstance(ids, list) and isinstance(got, list) and len(ids) == len(got)):
            return f"label {label!r:.40}: idxs and vals are not lists of one length"
        if ids not in ([], [trial.trial_id]):
            return f"label {label!r:.40}: idxs name trial {ids!r:.40}, not {trial.trial_id}"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in got):
            return f"label {label!r:.40}: vals are not finite numbers"
    if space is not None:
        try:
            again = space.vals_from_params(space.params_from_vals(vals))
        except Exception as err:  # whatever the space makes of hostile vals
            return f"its vals do not fit the space ({type(err).__name__}: {err!s:.200})"
        if any(vals.get(label) != value for label, value in again.items()):
            return "its vals are not what the space makes of its params"
    return None


def rebuild(stored: Sequence[Entry], space: Space | None = None,
            min_rung_results: int = MIN_RUNG_RESULTS):
    """A ``hyperopt.Trials`` holding the stored trials that belong in it, by trial id (with
    the ``space``, only those whose vals fit it), scored at the level their rungs give."""
    import hyperopt

    search = [t for t in stored if t.reference is None]
    reached: dict[int, int] = {}
    for t in search:
        if observed := points(t):
            reached[observed[-1][0]] = reached.get(observed[-1][0], 0) + 1
    level = scoring_level(reached, min_rung_results)
    trials = hyperopt.Trials()
    docs = [hyperopt_doc(trials, t, state) for t in sorted(search, key=lambda t: t.trial_id)
            if (state := job(t, space, level)) is not None]
    trials.insert_trial_docs(docs)
    trials.refresh()
    return trials


class History:
    """One experiment's history kept between rounds: an entry per trial (every one the store
    has shown, plus those made here that it has not shown yet), counts, the best search trial,
    and hyperopt's ``Trials`` over the search trials.

    Only hyperopt's public surface is used: a trial's doc is inserted once
    (``insert_trial_docs``); later changes are made to that doc in place (state, result, misc,
    as hyperopt's own ``fmin`` does when a job finishes), and ``refresh()`` re-selects the docs
    in valid states, so a trial that fails or is cancelled keeps its doc in the error state, out
    of ``trials.trials`` as ``rebuild`` leaves it out. ``tpe.suggest`` reads only
    ``trials.trials`` (each doc's tid, result and misc) and orders the docs by tid itself, so
    it suggests what it would from a ``Trials`` rebuilt from the same entries.
    """

    def __init__(self, space: Space | None = None,
                 min_rung_results: int = MIN_RUNG_RESULTS) -> None:
        import hyperopt

        self.space = space
        """The search's space: a trial whose vals do not fit it stays out of TPE's history."""
        self.min_rung_results = min_rung_results
        self.level = FULL_BUDGET_LEVEL
        """The level TPE scores trials at (module docstring)."""
        self._reached: dict[int, int] = {}
        """Search trials per level of their highest observation."""
        self._top: dict[int, int] = {}
        """Each search trial's highest observed level."""
        self.cursor = 0
        """Where the next read of the store's changes starts (0: everything)."""
        self.entries: dict[int, HistoryEntry] = {}
        self.trials = hyperopt.Trials()
        """hyperopt's history of the search trials, what ``tpe.suggest`` reads."""
        self.counts: dict[str, int] = dict.fromkeys(STATES, 0)
        """Trials per state, reference runs included."""
        self.created = 0
        """Search trials made and not cancelled (what ``max_trials`` counts)."""
        self.warm_starts: set[str] = set()
        """The warm starts made into trials (in any state)."""
        self._docs: dict[int, dict[str, Any]] = {}
        self._stored: set[int] = set()
        self._references: dict[int, HistoryEntry] = {}
        self._best: HistoryEntry | None = None
        self._best_stale = False

    @classmethod
    def of(cls, stored: Iterable[Entry], space: Space | None = None,
           min_rung_results: int = MIN_RUNG_RESULTS) -> History:
        """The history of the given trials (as the store would show them)."""
        history = cls(space, min_rung_results)
        history.apply(e if isinstance(e, HistoryEntry) else HistoryEntry.of(e) for e in stored)
        return history

    # --- reading ------------------------------------------------------------------------------
    def update(self, store, experiment: str) -> None:
        """Apply the trials the store has written since the last update (all, the first time)."""
        entries, self.cursor = store.changes(experiment, self.cursor)
        self.apply(entries)

    @property
    def pending(self) -> int:
        """Queued and running trials, reference runs included (they occupy workers too)."""
        return self.counts[QUEUED] + self.counts[RUNNING]

    def shown(self, trial_id: int) -> bool:
        """Whether the store has shown this trial (the others were made here)."""
        return trial_id in self._stored

    def values(self) -> list[HistoryEntry]:
        """Every entry, by trial id."""
        return [self.entries[i] for i in sorted(self.entries)]

    def references(self) -> list[HistoryEntry]:
        """The reference runs' entries, by trial id."""
        return [self._references[i] for i in sorted(self._references)]

    def best(self) -> HistoryEntry | None:
        """The search trial with the highest objective (the lowest id among equals), as
        ``best_objective`` picks it from the entries by id."""
        if self._best_stale:
            self._best = best_objective(self.values())
            self._best_stale = False
        return self._best

    # --- changing -----------------------------------------------------------------------------
    def apply(self, entries: Iterable[HistoryEntry], local: bool = False) -> None:
        """Take these entries as the trials' current state. ``local`` ones (made here, not read
        from the store) never replace what the store has shown of the same trial."""
        new: dict[int, dict[str, Any]] = {}
        changed: list[HistoryEntry] = []
        for entry in entries:
            tid = entry.trial_id
            if local and tid in self._stored:
                continue
            if not local:
                self._stored.add(tid)
            old = self.entries.get(tid)
            if old is not None:
                self._count(old, -1)
            self.entries[tid] = entry
            self._count(entry, 1)
            if entry.reference is not None:
                self._references[tid] = entry
                continue
            self._track_best(old, entry)
            self._observe(entry)
            changed.append(entry)
        level = scoring_level(self._reached, self.min_rung_results)
        if level != self.level:  # every trial is scored again
            self.level = level
            changed = [e for e in self.values() if e.reference is None]
        for entry in changed:
            self._set_doc(entry, new)
        if new:
            self.trials.insert_trial_docs(list(new.values()))
        self.trials.refresh()
        if new:
            self._find_docs(new)

    def _count(self, entry: HistoryEntry, sign: int) -> None:
        self.counts[entry.state] = self.counts.get(entry.state, 0) + sign
        if entry.reference is None:
            self.created += sign * (entry.state != CANCELLED)
            label = entry.misc.get("warm_start") if isinstance(entry.misc, Mapping) else None
            if sign > 0 and label is not None:
                self.warm_starts.add(label)

    def _observe(self, entry: HistoryEntry) -> None:
        """Count the trial at the level of its highest observation."""
        tid = entry.trial_id
        before = self._top.pop(tid, None)
        if before is not None:
            self._reached[before] -= 1
            if not self._reached[before]:
                del self._reached[before]
        observed = points(entry)
        if observed:
            self._top[tid] = top = observed[-1][0]
            self._reached[top] = self._reached.get(top, 0) + 1

    def _track_best(self, old: HistoryEntry | None, entry: HistoryEntry) -> None:
        if self._best_stale:
            return
        if old is not None and self._best is not None and old.trial_id == self._best.trial_id:
            self._best_stale = True  # the best changed: found again when asked
            return
        objective = (entry.result or {}).get("objective")
        if objective is None or entry.state != DONE or not full_budget(entry.result):
            return
        best = self._best
        if best is None or objective > best.result["objective"] or (
                objective == best.result["objective"] and entry.trial_id < best.trial_id):
            self._best = entry

    def _set_doc(self, entry: HistoryEntry, new: dict[int, dict[str, Any]]) -> None:
        """Bring the trial's hyperopt doc to the entry (insert it, change it, or put it in the
        error state, out of the history)."""
        from hyperopt import base as hyperopt

        tid = entry.trial_id
        state = job(entry, self.space, self.level)
        doc = self._docs.get(tid)
        if doc is None:
            if state is not None:
                new[tid] = hyperopt_doc(self.trials, entry, state)
            else:
                new.pop(tid, None)
            return
        if state is None:
            doc["state"] = hyperopt.JOB_STATE_ERROR
            return
        doc["state"], doc["result"] = state
        doc["misc"].update(idxs=dict(entry.misc["idxs"]), vals=dict(entry.misc["vals"]))

    def _find_docs(self, new: Mapping[int, dict[str, Any]]) -> None:
        """Keep a handle on the docs just inserted (hyperopt inserts copies). They come last in
        ``trials.trials``, so the search from the end is short."""
        wanted = set(new)
        for doc in reversed(self.trials.trials):
            if doc["tid"] in wanted:
                self._docs[doc["tid"]] = doc
                wanted.discard(doc["tid"])
                if not wanted:
                    return
        raise RuntimeError(f"hyperopt's Trials did not keep the docs of trials {sorted(wanted)}")


def misc_from_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON part of a hyperopt doc's misc that the store keeps (plain Python numbers)."""
    return {"idxs": _lists(doc["misc"]["idxs"]), "vals": _lists(doc["misc"]["vals"])}


def _lists(mapping: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    return {label: [plain(v) for v in values] for label, values in mapping.items()}
