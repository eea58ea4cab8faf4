"""``localrules trials`` and ``localrules experiments``: read a trial database.

Both only read: a database that does not exist is an error, never created. ``--format json``
prints an array of trial objects (params, result, progress, config, ISO timestamps); ``csv`` the
flat rows of ``store.frame``; ``table`` a leaderboard-style view.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from localrules.cli.tables import fmt, iso, table, terminal_width
from localrules.store import STATES, Trial, TrialStore
from localrules.store.documents import best_objective, state_counts
from localrules.store.urls import add_db_argument

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
    p.add_argument("--limit", type=int, help="show at most N trials")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(handler=run_trials)

    e = sub.add_parser("experiments", help="list the experiments in a trial database")
    add_db_argument(e)
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.set_defaults(handler=run_experiments)


def trial_json(trial: Trial) -> dict[str, Any]:
    """One trial as the JSON object the query commands print."""
    return {
        "experiment": trial.experiment,
        "trial_id": trial.trial_id,
        "state": trial.state,
        "attempt": trial.attempt,
        "worker": trial.worker,
        "params": dict(trial.params),
        "result": None if trial.result is None else dict(trial.result),
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
    if key in ("objective", "top1", "top5", "diverged", "epochs"):
        return (trial.result or {}).get(key)
    if key.startswith("params."):
        return trial.params.get(key[len("params."):])
    return getattr(trial, key)


SORT_KEYS = ("trial_id", "objective", "top1", "top5", "state", "attempt", "created_at",
             "started_at", "finished_at", "updated_at", "diverged", "epochs")


def sort_trials(trials: Sequence[Trial], key: str, reverse: bool = False) -> list[Trial]:
    """Sorted by ``key``; trials without a value go last whatever the order."""
    if key not in SORT_KEYS and not key.startswith("params."):
        raise ValueError(f"unknown sort key {key!r}; valid: {', '.join(SORT_KEYS)}, params.NAME")
    descending = (key in DESCENDING) != reverse
    have = [t for t in trials if _sort_value(t, key) is not None]
    missing = [t for t in trials if _sort_value(t, key) is None]
    try:
        have.sort(key=lambda t: _sort_value(t, key), reverse=descending)
    except TypeError:
        have.sort(key=lambda t: str(_sort_value(t, key)), reverse=descending)
    return have + missing


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def trials_table(trials: Sequence[Trial]) -> str:
    rows = []
    for t in trials:
        result = t.result or {}
        progress = t.progress or {}
        epoch = progress.get("epoch")
        epochs = f"{epoch}/{progress.get('epochs')}" if epoch is not None else "-"
        rows.append([t.trial_id, t.state, t.attempt, result.get("objective"),
                     result.get("diverged"), epochs, params_text(dict(t.params))])
    return table(["trial", "state", "attempt", "objective", "diverged", "epoch", "params"], rows,
                 max_width=terminal_width())


def open_existing(url: str) -> TrialStore:
    from localrules.store import open_store

    return open_store(url, create=False)


def run_trials(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    with open_existing(args.db) as store:
        store.require_experiment(args.experiment)
        trials = sort_trials(store.trials(args.experiment, args.state), args.sort, args.reverse)
    if args.limit is not None:
        trials = trials[: args.limit]
    if args.format == "json":
        print(json.dumps([trial_json(t) for t in trials], indent=2))
    elif args.format == "csv":
        from localrules.store.frame import trial_row

        rows = [trial_row(t) for t in trials]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(trials_table(trials))
    return 0


def run_experiments(args: argparse.Namespace) -> int:
    with open_existing(args.db) as store:
        rows = []
        for e in store.list_experiments():
            history = store.history(e.name)  # ids, states and results: no configs read
            best = best_objective(history)
            rows.append({
                "name": e.name, "space": e.space_name, "counts": state_counts(history),
                "best_objective": None if best is None else best.result["objective"],
                "max_trials": e.settings.get("max_trials"), "budget": dict(e.budget),
                "created_at": iso(e.created_at),
            })
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(table(["experiment", "space", *STATES, "best", "max", "created"],
                [[r["name"], r["space"], *(r["counts"][s] for s in STATES),
                  r["best_objective"], r["max_trials"], r["created_at"]] for r in rows]))
    return 0
