"""``localrules trials`` and ``localrules experiments``: read a trial database.

Both only read: a database that does not exist is an error, never created. ``trials`` is a
query (``store.query``, docs/query.md): one or more experiments, ``--where`` filters, ``--sort``
and ``--limit``, all applied by the database. ``--format json`` prints an array of trial objects
(params, result, progress, config, ISO timestamps); ``csv`` and ``parquet`` the flat rows of
``store.frame`` (``cli.export``); ``table`` a leaderboard-style view; ``--columns`` keeps the
columns named.

Under a multi-fidelity search a trial paused (or stopped) at a lower rung holds a rung result:
its rung is shown beside it, it has no gap closed, and it is never ranked against full-budget
results (sorted by objective, it comes after them; the leaderboard leaves it out and counts it
apart). Both commands show the trial-epochs spent (``results.trial_epochs`` summed over the
search trials: the epochs of reported results) and the best full-budget objective so far.

``localrules experiments --compare A B …`` sets the named experiments side by side, one row each
in the order given: the same row (``store.summary.experiment_summary``) as the plain listing,
whose figures include the median of the top decile of full-budget results (steadier than the
best alone) and the bp and fa objectives the gap closed is read against.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from localrules.cli.arguments import add_db_argument, number
from localrules.cli.tables import fmt, iso, table, terminal_width
from localrules.results import trial_epochs
from localrules.store import STATES, Experiment, HistoryEntry, Trial, TrialStore
from localrules.store.documents import (
    QUEUED,
    RUNNING,
    full_budget_trial,
    paused_trial,
)
from localrules.store.references import (
    GAP_RULES,
    References,
)
from localrules.store.summary import experiment_summary, search_summary
from localrules.validation import TRIALS

FORMATS = ("table", "csv", "json", "parquet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trials", help="query the trials of one or more experiments",
        description="Query the trials of one or more experiments: the database filters, sorts "
                    "and limits (docs/query.md).")
    p.add_argument("--experiment", required=True, action="append",
                   help="experiment name (repeat for several: one table, rows named by "
                        "experiment)")
    add_db_argument(p)
    p.add_argument("--where", metavar="EXPR",
                   help="filter, e.g. \"params.noise == true and result.top1 >= 0.9\", "
                        "\"state in (done, failed)\", \"not params.alternate\", "
                        "\"result.gap_closed > 0.5\" (docs/query.md)")
    p.add_argument("--state", action="append", choices=STATES,
                   help="only trials in this state (repeatable; the same as --where \"state in "
                        "(...)\")")
    p.add_argument("--columns", metavar="LIST",
                   help="comma-separated columns, e.g. experiment,trial_id,params.noise,"
                        "result.top1,gap_closed (default: the table's, or every column)")
    p.add_argument("--sort", default=None,
                   help="a field: trial_id (default), objective, top1, top5, gap_closed (best "
                        "first), state, created_at, ..., params.NAME, result.NAME")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--limit", type=number(TRIALS), help="show at most N trials")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", metavar="FILE",
                   help="write to FILE instead of the terminal (required for parquet; an "
                        "existing file is refused)")
    p.set_defaults(handler=run_trials)

    e = sub.add_parser("experiments", help="list the experiments in a trial database",
                       description="List the experiments in the trial database, or compare "
                                   "the named ones side by side (--compare).")
    add_db_argument(e)
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.add_argument("--compare", nargs="+", metavar="NAME",
                   help="one row per named experiment, in the order given: trials by state, "
                        "best and top-decile median full-budget objective, gap closed, "
                        "references, trial-epochs spent")
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
    summary = search_summary(trials, references)
    text = f"trial-epochs spent: {summary['trial_epochs']}; best full-budget objective so far: "
    if summary["best_trial"] is None:
        text += "none yet"
    else:
        text += (f"{summary['best_objective']:.4f} (trial {summary['best_trial']}, gap closed "
                 f"{fmt(summary['best_gap_closed'])})")
    paused = summary["paused"]
    return text + (f"; {paused} paused at a lower rung (not ranked)" if paused else "")


def trials_table(trials: Sequence[Trial], references: References | Mapping[str, References],
                 several: bool = False) -> str:
    """The trials as a table (``references``: one experiment's, or by experiment); with
    ``several``, a first column names each row's experiment."""
    rows = []
    for t in trials:
        refs = references if isinstance(references, References) else references[t.experiment]
        result = t.result or {}
        progress = t.progress or {}
        epoch = progress.get("epoch")
        epochs = f"{epoch}/{progress.get('epochs')}" if epoch is not None else "-"
        rows.append([*([t.experiment] if several else []), t.trial_id, t.state, kind_text(t),
                     t.attempt, result.get("objective"), refs.result_gap_closed(t.result),
                     result.get("diverged"), rung_text(t), epochs, trial_epochs(t.result),
                     params_text(dict(t.params))])
    return table([*(["experiment"] if several else []), "trial", "state", "kind", "attempt",
                  "objective", "gap closed", "diverged", "rung", "epoch", "trial-epochs",
                  "params"], rows, max_width=terminal_width())


def leaderboard(trials: Sequence[Trial], references: References, limit: int = 10) -> str:
    """The best full-budget search trials (reference runs left out) with their gap closed,
    under a line giving the references and one giving the trial-epochs spent; trials paused at
    a lower rung are never ranked here, only counted (with the best rung result) below."""
    ranked = sorted((t for t in trials if t.reference is None and t.objective is not None),
                    key=lambda t: (-t.objective, t.trial_id))
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


def where_of(args: argparse.Namespace) -> str | None:
    """The filter: ``--where`` and ``--state`` together."""
    from localrules.store.query.run import with_states

    return with_states(args.where, args.state or ())


def run_trials(args: argparse.Namespace) -> int:
    from localrules.cli.export import check_out, write_trials
    from localrules.store.query.plan import check_sort_field

    if args.sort is not None:  # before the store is opened
        try:
            check_sort_field(args.sort)
        except ValueError as err:
            raise ValueError(f"--sort: {err}") from None
    columns = None
    if args.columns is not None:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        if not columns:
            raise ValueError("--columns: give column names separated by commas")
    check_out(args.out, args.format)
    with open_existing(args.db) as store:
        chosen = store.select(args.experiment, where_of(args), args.sort, args.reverse,
                              args.limit, columns)
        spent = {} if args.format != "table" or columns else {
            name: spent_line(store.history(name), chosen.references[name])
            for name in chosen.experiments}
    if args.format == "table" and not columns:
        several = len(chosen.experiments) > 1
        for name, line in spent.items():
            label = f" ({name})" if several else ""
            print(f"references{label}: {chosen.references[name].describe()}")
            print(line if not several else f"{name}: {line}")
        print(trials_table(chosen.trials, chosen.references, several))
        return 0
    write_trials(chosen, args.format, args.out)
    return 0


Column = tuple[str, Callable[[dict[str, Any]], Any]]
"""A table column: its header and the cell it takes from a row."""
EXPERIMENT_COLUMNS: tuple[Column, ...] = (
    ("experiment", lambda r: r["name"]),
    *((state, lambda r, s=state: r["counts"][s]) for state in STATES),
    ("best", lambda r: r["best_objective"]),
    ("top-10% median", lambda r: r["top_decile_median"]),
    ("gap closed", lambda r: r["best_gap_closed"]),
    *((rule, lambda r, g=rule: r["reference_objectives"][g]) for rule in GAP_RULES),
    ("trial-epochs", lambda r: r["trial_epochs"]),
    ("paused", lambda r: r["paused"]),
    ("fidelity", lambda r: r["fidelity"]),
    ("space", lambda r: r["space"]),
)
"""The table of ``localrules experiments`` (and ``--compare``): header and cell of a row."""
LISTING_COLUMNS: tuple[Column, ...] = (
    *EXPERIMENT_COLUMNS,
    ("max", lambda r: r["max_trials"]),
    ("created", lambda r: r["created_at"]),
)


def experiment_row(store: TrialStore, experiment: Experiment) -> dict[str, Any]:
    """An experiment's row (``store.summary.experiment_summary``), read through its history
    (ids, states and results: no configs), with ``created_at`` as ISO text."""
    row = experiment_summary(experiment, store.history(experiment.name))
    return {**row, "created_at": iso(row["created_at"])}


def experiments_table(rows: Sequence[dict[str, Any]],
                      columns: Sequence[Column]) -> str:
    """The rows as a table of the given columns (numbers right-aligned, None as ``-``)."""
    return table([header for header, _ in columns],
                 [[cell(r) for _, cell in columns] for r in rows])


def run_experiments(args: argparse.Namespace) -> int:
    """Every experiment, or with ``--compare`` the named ones in the order given (each once);
    a name the database does not hold is bad input (naming those it does), found before
    anything is printed."""
    with open_existing(args.db) as store:
        if args.compare is None:
            experiments = store.list_experiments()
        else:
            experiments = [store.require_experiment(name)
                           for name in dict.fromkeys(args.compare)]
        rows = [experiment_row(store, e) for e in experiments]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(experiments_table(rows, EXPERIMENT_COLUMNS if args.compare else LISTING_COLUMNS))
    return 0
