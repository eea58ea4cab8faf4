"""``localrules trials`` and ``localrules experiments``: read a trial database.

Both only read: a database that does not exist is an error, never created. ``--format json``
prints an array of trial objects (params, result, progress, config, ISO timestamps); ``csv`` the
flat rows of ``store.frame``; ``table`` a leaderboard-style view.

Under a multi-fidelity search a trial paused (or stopped) at a lower rung holds a rung result:
its rung is shown beside it, it has no gap closed, and it is never ranked against full-budget
results (sorted by objective, it comes after them; the leaderboard leaves it out and counts it
apart). Both commands show the trial-epochs spent (``results.trial_epochs`` summed over the
search trials: the epochs of reported results) and the best full-budget objective so far.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from localrules.cli.arguments import add_db_argument, number
from localrules.cli.tables import fmt, iso, table, terminal_width
from localrules.results import full_budget, trial_epochs
from localrules.store import STATES, HistoryEntry, Trial, TrialStore
from localrules.store.documents import (
    QUEUED,
    RUNNING,
    best_objective,
    full_budget_trial,
    paused_trial,
    state_counts,
)
from localrules.store.references import (
    GAP_RULES,
    References,
    references_of,
    requested_references,
    search_trials,
)
from localrules.validation import TRIALS, shown

FORMATS = ("table", "csv", "json")
DESCENDING = frozenset({"objective", "top1", "top5"})
"""Sort keys where higher is better, sorted best first."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trials", help="list an experiment's trials",
                       description="List the trials of an experiment from the trial database.")
    p.add_argument("--experiment", required=True, help="experiment name")
    add_db_argument(p)
    p.add_argument("--state", action="append", choices=STATES,
                   help="only trials in this state (repeatable)")
    p.add_argument("--sort", default="trial_id",
                   help="trial_id (default), objective, top1 (best first), state, attempt, "
                        "created_at, finished_at, or params.NAME")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--limit", type=number(TRIALS), help="show at most N trials")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(handler=run_trials)

    e = sub.add_parser("experiments", help="list the experiments in a trial database")
    add_db_argument(e)
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.set_defaults(handler=run_experiments)


def trial_json(trial: Trial, references: References) -> dict[str, Any]:
    """One trial as the JSON object the query commands print, with its gap closed (from the
    experiment's ``references``) and, when that is null, why."""
    gap = references.result_gap_closed(trial.result)
    return {
        "experiment": trial.experiment,
        "trial_id": trial.trial_id,
        "state": trial.state,
        "attempt": trial.attempt,
        "worker": trial.worker,
        "reference": None if trial.reference is None else dict(trial.reference),
        "warm_start": (trial.misc or {}).get("warm_start"),
        "params": dict(trial.params),
        "result": None if trial.result is None else dict(trial.result),
        "gap_closed": gap,
        "gap_closed_reason": None if gap is not None else (
            references.result_gap_reason(trial.result) or "no objective"),
        "fidelity": None if trial.fidelity is None else dict(trial.fidelity),
        "full_budget": full_budget_trial(trial),
        "trial_epochs": trial_epochs(trial.result),
        "progress": None if trial.progress is None else dict(trial.progress),
        "error": trial.error,
        "config": dict(trial.config),
        "code_version": trial.code_version,
        "created_at": iso(trial.created_at),
        "started_at": iso(trial.started_at),
        "updated_at": iso(trial.updated_at),
        "finished_at": iso(trial.finished_at),
    }


def _sort_value(trial: Trial, key: str) -> Any:
    if key == "trial_epochs":
        return trial_epochs(trial.result) if trial.result is not None else None
    if key in ("objective", "top1", "top5", "diverged", "epochs", "rung"):
        return (trial.result or {}).get(key)
    if key.startswith("params."):
        return trial.params.get(key[len("params."):])
    return getattr(trial, key)


SORT_KEYS = ("trial_id", "objective", "top1", "top5", "state", "attempt", "created_at",
             "started_at", "finished_at", "updated_at", "diverged", "epochs", "trial_epochs",
             "rung")


def check_sort_key(key: object) -> str:
    """``key`` if trials can be sorted by it; ValueError listing the valid keys."""
    if not isinstance(key, str) or (key not in SORT_KEYS and not (
            key.startswith("params.") and len(key) > len("params."))):
        raise ValueError(f"unknown sort key {shown(key)}; valid: {', '.join(SORT_KEYS)}, "
                         "params.NAME")
    return key


def sort_trials(trials: Sequence[Trial], key: str, reverse: bool = False) -> list[Trial]:
    """Sorted by ``key``; trials without a value go last whatever the order. By a score
    (objective, top1, top5), rung results (trials paused at a lower rung) come after the
    full-budget results, whatever the order: a rung's top-1 is never ranked among them."""
    check_sort_key(key)
    descending = (key in DESCENDING) != reverse
    have = [t for t in trials if _sort_value(t, key) is not None]
    missing = [t for t in trials if _sort_value(t, key) is None]
    groups = [have]
    if key in DESCENDING:
        groups = [[t for t in have if full_budget(t.result)],
                  [t for t in have if not full_budget(t.result)]]
    for group in groups:
        try:
            group.sort(key=lambda t: _sort_value(t, key), reverse=descending)
        except TypeError:
            group.sort(key=lambda t: str(_sort_value(t, key)), reverse=descending)
    return [t for group in groups for t in group] + missing


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def kind_text(trial: Trial) -> str:
    """What a trial is: a reference run (its rule), a warm start (its label), or TPE's."""
    if trial.reference is not None:
        reused = " (reused)" if "reused_from" in (trial.result or {}) else ""
        return f"reference {trial.reference.get('rule')}{reused}"
    warm = (trial.misc or {}).get("warm_start")
    if warm is not None:
        return f"warm start {warm}"
    return "random" if (trial.misc or {}).get("startup") else "tpe"


def rung_text(trial: Trial) -> str:
    """A trial's place in a multi-fidelity search: its result's rung, ``paused`` when that is
    a rung result (``stopped`` for Ray's ASHA, which records no rung), ``0→1`` while a
    promoted trial trains to the next rung; ``-`` outside a multi-fidelity search."""
    result = trial.result or {}
    rung, target = result.get("rung"), (trial.fidelity or {}).get("rung")
    if trial.state in (QUEUED, RUNNING) and target is not None and target != rung:
        return f"{'' if rung is None else rung}→{target}"
    if rung is None:
        return "stopped" if result.get("stopped_early") else "-"
    return f"{rung} paused" if result.get("stopped_early") else str(rung)


def spent_line(trials: Sequence[Trial | HistoryEntry], references: References) -> str:
    """The search's trial-epochs spent and its best full-budget result so far (reference runs
    left out of both), with the trials paused at a lower rung counted apart."""
    search = search_trials(trials)
    spent = sum(trial_epochs(t.result) for t in search)
    best = best_objective(search)
    paused = sum(map(paused_trial, search))
    text = f"trial-epochs spent: {spent}; best full-budget objective so far: "
    if best is None:
        text += "none yet"
    else:
        objective = best.result["objective"]
        text += (f"{objective:.4f} (trial {best.trial_id}, gap closed "
                 f"{fmt(references.gap_closed(objective))})")
    return text + (f"; {paused} paused at a lower rung (not ranked)" if paused else "")


def trials_table(trials: Sequence[Trial], references: References) -> str:
    rows = []
    for t in trials:
        result = t.result or {}
        progress = t.progress or {}
        epoch = progress.get("epoch")
        epochs = f"{epoch}/{progress.get('epochs')}" if epoch is not None else "-"
        rows.append([t.trial_id, t.state, kind_text(t), t.attempt, result.get("objective"),
                     references.result_gap_closed(t.result), result.get("diverged"),
                     rung_text(t), epochs, trial_epochs(t.result),
                     params_text(dict(t.params))])
    return table(["trial", "state", "kind", "attempt", "objective", "gap closed", "diverged",
                  "rung", "epoch", "trial-epochs", "params"], rows, max_width=terminal_width())


def leaderboard(trials: Sequence[Trial], references: References, limit: int = 10) -> str:
    """The best full-budget search trials (reference runs left out) with their gap closed,
    under a line giving the references and one giving the trial-epochs spent; trials paused at
    a lower rung are never ranked here, only counted (with the best rung result) below."""
    ranked = [t for t in sort_trials(trials, "objective") if t.reference is None]
    best = [t for t in ranked if full_budget_trial(t)][:limit]
    rows = [[t.trial_id, kind_text(t), t.objective, references.gap_closed(t.objective),
             t.result.get("diverged"), rung_text(t), trial_epochs(t.result),
             params_text(dict(t.params))] for t in best]
    lines = [f"references: {references.describe()}", spent_line(trials, references),
             table(["trial", "kind", "objective", "gap closed", "diverged", "rung",
                    "trial-epochs", "params"], rows, max_width=terminal_width())]
    paused = [t for t in ranked if paused_trial(t)]
    if paused:
        top = max(paused, key=lambda t: ((t.result or {}).get("rung") or 0, t.objective))
        lines.append(f"paused at a lower rung (rung results, not ranked): {len(paused)}; "
                     f"highest: trial {top.trial_id} at rung {rung_text(top)}, objective "
                     f"{top.objective:.4f}")
    return "\n".join(lines)


def open_existing(url: str) -> TrialStore:
    from localrules.store import open_store

    return open_store(url, read_only=True)


def run_trials(args: argparse.Namespace) -> int:
    try:
        check_sort_key(args.sort)
    except ValueError as err:
        raise ValueError(f"--sort: {err}") from None
    with open_existing(args.db) as store:
        experiment = store.require_experiment(args.experiment)
        every = store.trials(args.experiment)  # the references come from all of them
    references = references_of(every, requested_references(experiment))
    chosen = [t for t in every if args.state is None or t.state in args.state]
    trials = sort_trials(chosen, args.sort, args.reverse)
    if args.limit is not None:
        trials = trials[: args.limit]
    if args.format == "json":
        print(json.dumps([trial_json(t, references) for t in trials], indent=2))
    elif args.format == "csv":
        from localrules.store.frame import trial_row

        rows = [trial_row(t, references) for t in trials]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(f"references: {references.describe()}")
        print(spent_line(every, references))
        print(trials_table(trials, references))
    return 0


def run_experiments(args: argparse.Namespace) -> int:
    with open_existing(args.db) as store:
        rows = []
        for e in store.list_experiments():
            history = store.history(e.name)  # ids, states and results: no configs read
            best = best_objective(history)
            objective = None if best is None else best.result["objective"]
            references = references_of(history, requested_references(e))
            search = search_trials(history)
            rows.append({
                "name": e.name, "space": e.space_name,
                "counts": state_counts(search),  # references: their own field
                "trial_epochs": sum(trial_epochs(t.result) for t in search),
                "paused": sum(map(paused_trial, search)),
                "fidelity": (e.settings.get("fidelity") or {}).get("kind", "none"),
                "best_objective": objective,
                "best_gap_closed": references.gap_closed(objective),
                "references": {rule: {k: v for k, v in level.to_dict().items()
                                      if k != "pending"}
                               for rule, level in references.levels.items()},
                "gap_reason": references.gap_reason(),
                "reading": e.reading,
                "max_trials": e.settings.get("max_trials"), "budget": dict(e.budget),
                "created_at": iso(e.created_at),
            })
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(table(["experiment", "space", *STATES, "paused", "trial-epochs", "best",
                 "gap closed", "bp", "fa", "max", "created"],
                [[r["name"], r["space"], *(r["counts"][s] for s in STATES), r["paused"],
                  r["trial_epochs"], r["best_objective"], r["best_gap_closed"],
                  *((r["references"].get(rule) or {}).get("objective") for rule in GAP_RULES),
                  r["max_trials"], r["created_at"]] for r in rows]))
    return 0
