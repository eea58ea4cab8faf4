"""An experiment's search summed up from its history: what ``localrules experiments`` lists
for each experiment and ``--compare`` sets side by side.

Pure: the caller reads the store (``store.history``, a projection without configs) and the
experiment document; nothing here reads or writes a database. Every figure is of the search
trials (reference runs left out, ``references.search_trials``), and only full-budget results
are ranked (``documents.full_budget_trial``); the references serve as the yardstick of the gap
closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localrules.results import trial_epochs
from localrules.store.documents import (
    Experiment,
    HistoryEntry,
    Trial,
    best_objective,
    full_budget_trial,
    paused_trial,
    state_counts,
    top_decile_median,
)
from localrules.store.references import (
    GAP_RULES,
    References,
    references_of,
    requested_references,
    search_trials,
)

NO_RESULT = "no full-budget result yet"


def search_summary(trials: Sequence[Trial | HistoryEntry],
                   references: References) -> dict[str, Any]:
    """The search's figures: trials by state, full-budget results, paused trials, trial-epochs
    spent, the best full-budget objective (and its trial), the top decile's median, and the
    best's gap closed against ``references`` — None with the reason when it has none (the
    references' reason first: it outlasts the lack of a result)."""
    search = search_trials(trials)
    best = best_objective(search)
    objective = None if best is None else best.result["objective"]
    gap = references.gap_closed(objective)
    return {
        "counts": state_counts(search),
        "full_budget_trials": sum(map(full_budget_trial, search)),
        "paused": sum(map(paused_trial, search)),
        "trial_epochs": sum(trial_epochs(t.result) for t in search),
        "best_objective": objective,
        "best_trial": None if best is None else best.trial_id,
        "top_decile_median": top_decile_median(search),
        "best_gap_closed": gap,
        "best_gap_closed_reason": None if gap is not None else (
            references.gap_reason() or NO_RESULT),
    }


def experiment_summary(experiment: Experiment,
                       history: Sequence[Trial | HistoryEntry]) -> dict[str, Any]:
    """One experiment as a plain JSON object: its name, space and fidelity kind, the
    ``search_summary`` of its ``history``, the references (each rule's ``{objective, sem, n}``
    and the bp and fa objectives on their own, None while missing), why there is no gap closed
    (``gap_reason``), its α/β/γ reading, max_trials, budget and ``created_at`` (Unix seconds)."""
    references = references_of(history, requested_references(experiment))
    levels = references.levels
    return {
        "name": experiment.name,
        "space": experiment.space_name,
        "fidelity": (experiment.settings.get("fidelity") or {}).get("kind", "none"),
        **search_summary(history, references),
        "reference_objectives": {rule: levels[rule].objective if rule in levels else None
                                 for rule in GAP_RULES},
        "references": {rule: {k: v for k, v in level.to_dict().items() if k != "pending"}
                       for rule, level in levels.items()},
        "gap_reason": references.gap_reason(),
        "reading": experiment.reading,
        "max_trials": experiment.settings.get("max_trials"),
        "budget": dict(experiment.budget),
        "created_at": experiment.created_at,
    }
