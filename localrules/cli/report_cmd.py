"""``localrules report``: what a search found.

``report importance`` ranks the categorical metaparameters of an experiment by the spread of the
objective's mean between their levels, with SEMs and n per level (appendix B.4, Fig. S2); it
works on any store and on a search that is still running, and says how many trials were failed,
unfinished or diverged.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from localrules.cli.tables import table
from localrules.store.urls import add_db_argument

FORMATS = ("table", "csv", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="reports on an experiment (importance)",
                       description=__doc__.split("\n\n")[0])
    reports = p.add_subparsers(dest="report", metavar="REPORT", required=True)
    imp = reports.add_parser("importance", help="categorical metaparameter importance with SEM")
    imp.add_argument("--experiment", required=True)
    add_db_argument(imp)
    imp.add_argument("--top-fraction", type=float,
                     help="analyse only the best fraction of trials (0 < F <= 1)")
    imp.add_argument("--method", choices=("categorical", "model"), default="categorical",
                     help="categorical: level means with SEM (default); model: random-forest "
                          "permutation importance of every parameter, bootstrap SE")
    imp.add_argument("--bootstrap", type=int, default=30,
                     help="bootstrap resamples for --method model (default 30)")
    imp.add_argument("--seed", type=int, default=0, help="seed for --method model")
    imp.add_argument("--format", choices=FORMATS, default="table")
    imp.add_argument("--out", help="also write importance.csv and importance.json here")
    imp.set_defaults(handler=run_importance)


def _csv_text(report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["parameter", "importance", "importance_se", "level", "mean", "sem", "n",
                     "note"])
    for p in report.parameters:
        for lv in p.levels:
            writer.writerow([p.parameter, p.importance, p.importance_se, json.dumps(lv.level),
                             lv.mean, lv.sem, lv.n, p.note])
    return out.getvalue()


def _table_text(report) -> str:
    rows = []
    for p in report.parameters:
        levels = "  ".join(f"{json.dumps(lv.level)}: {lv.mean:.4f}"
                           f"{'' if lv.sem is None else f' ± {lv.sem:.4f}'} (n={lv.n})"
                           for lv in p.levels)
        rows.append([p.parameter, p.importance, p.importance_se, levels + (
            f"  [{p.note}]" if p.note else "")])
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts.items()))
    head = (f"experiment {report.experiment}: {report.analysed} trials analysed"
            f"{'' if report.top_fraction is None else f' (top {report.top_fraction:g})'}; "
            f"{counts}; {report.diverged} diverged (counted at chance level)")
    return head + "\n" + table(["parameter", "importance", "± SE", "levels: mean ± SEM (n)"],
                               rows)


def run_importance(args: argparse.Namespace) -> int:
    from localrules.analysis.importance import experiment_importance
    from localrules.store import open_store

    if args.top_fraction is not None and not 0 < args.top_fraction <= 1:
        raise ValueError(f"--top-fraction must be in (0, 1], got {args.top_fraction}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out!r} exists and is not a directory")
    if args.bootstrap < 2:
        raise ValueError(f"--bootstrap must be at least 2, got {args.bootstrap}")
    if args.method == "model":
        return _run_model(args)
    with open_store(args.db, create=False) as store:
        report = experiment_importance(store, args.experiment, args.top_fraction)
    data = [p.to_dict() for p in report.parameters]
    if args.format == "json":
        print(json.dumps(data, indent=2))
    elif args.format == "csv":
        print(_csv_text(report), end="")
    else:
        print(_table_text(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "importance.json").write_text(json.dumps(data, indent=2))
        (out / "importance.csv").write_text(_csv_text(report))
    return 0



def _run_model(args: argparse.Namespace) -> int:
    import math

    from localrules.analysis.importance import experiment_data
    from localrules.analysis.model_importance import model_importance
    from localrules.spaces.nodes import walk
    from localrules.store import open_store

    with open_store(args.db, create=False) as store:
        data = experiment_data(store, args.experiment)
    rows = data.rows
    if args.top_fraction is not None:
        keep = max(1, math.ceil(len(rows) * args.top_fraction))
        rows = sorted(rows, key=lambda r: r["objective"], reverse=True)[:keep]
    names = [n.name for n in walk(data.space.nodes)]
    result = [m.to_dict() for m in model_importance(rows, names, n_bootstrap=args.bootstrap,
                                                       seed=args.seed)]
    if args.format == "json":
        print(json.dumps(result, indent=2))
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(result[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(result)
        print(out.getvalue(), end="")
    else:
        print(f"experiment {args.experiment}: {len(rows)} trials; random-forest permutation "
              f"importance (drop in R²), mean ± SD over {args.bootstrap} bootstrap resamples")
        print(table(["parameter", "importance", "± SE", "n active"],
                    [[m["parameter"], m["importance"], m["importance_se"], m["n"]]
                     for m in result]))
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model_importance.json").write_text(json.dumps(result, indent=2))
    return 0
