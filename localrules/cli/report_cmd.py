"""``localrules report``: what a search found, and how a run's weights evolved.

``report importance`` ranks the categorical metaparameters of an experiment by the spread of the
objective's mean between their levels, with SEMs and n per level (appendix B.4, Fig. S2), or every
parameter by a model's permutation importance; ``report progress`` follows the objective and the
best so far trial by trial, or against trial-epochs spent (``--x trial-epochs``, the fair
comparison between a plain and a multi-fidelity search); ``report weights``
(``report_weights.py``) draws Figs. S3–S4. Each works on any store and on a search that is still
running, and says how many trials were failed, unfinished, diverged or paused at a lower rung.
``docs/analysis.md`` is the user's guide.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

from localrules.analysis.progress import X_AXES
from localrules.cli.arguments import add_db_argument, number
from localrules.cli.tables import check_out_dir, dict_csv, print_report, table
from localrules.store.documents import counts_text
from localrules.validation import SEED, Limit

FORMATS = ("table", "csv", "json")
TOP_FRACTION = Limit(0, 1, low_open=True)
BOOTSTRAP = Limit(2, 1000, integer=True)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="reports on an experiment or a run (importance, "
                       "progress, weights)", description=__doc__.split("\n\n")[0])
    reports = p.add_subparsers(dest="report", metavar="REPORT", required=True)
    imp = reports.add_parser("importance", help="metaparameter importance with error bars")
    imp.add_argument("--experiment", required=True)
    add_db_argument(imp)
    imp.add_argument("--parameter", action="append", dest="parameters", metavar="NAME",
                     help="report only this parameter (repeatable; default: all)")
    imp.add_argument("--top-fraction", type=number(TOP_FRACTION),
                     help="analyse only the best fraction of trials (0 < F <= 1)")
    imp.add_argument("--method", choices=("categorical", "model"), default="categorical",
                     help="categorical: level means with SEM (default); model: random-forest "
                          "permutation importance of every parameter, bootstrap SE")
    imp.add_argument("--bootstrap", type=number(BOOTSTRAP), default=30,
                     help="bootstrap resamples for --method model (default 30)")
    imp.add_argument("--seed", type=number(SEED), default=0, help="seed for --method model")
    imp.add_argument("--format", choices=FORMATS, default="table")
    imp.add_argument("--out", help="also write importance.csv/.json, importance.png, "
                                   "progress.png and report.html here (--method model: "
                                   "model_importance.csv/.json)")
    imp.set_defaults(handler=run_importance)

    prog = reports.add_parser("progress", help="objective and best so far against trial number "
                              "or trial-epochs spent")
    prog.add_argument("--experiment", action="append", dest="experiments", required=True,
                      metavar="NAME", help="an experiment (repeat to compare several)")
    add_db_argument(prog)
    prog.add_argument("--x", choices=X_AXES, default="trial", dest="x_axis",
                      help="x-axis of progress.png and rows of progress.csv: trial number "
                           "(default) or trial-epochs spent, in order of finishing (the fair "
                           "comparison between fidelities)")
    prog.add_argument("--format", choices=FORMATS, default="table")
    prog.add_argument("--out", help="also write progress.csv/.json and progress.png here")
    prog.set_defaults(handler=run_progress)

    from localrules.cli import report_weights

    report_weights.register(reports)


def _csv_text(report) -> str:
    """One row per level; a parameter without levels (never active in a finished trial) gets
    one row with empty level columns, so no parameter is dropped."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["parameter", "importance", "importance_se", "level", "mean", "sem", "n",
                     "note"])
    for p in report.parameters:
        for lv in p.levels or [None]:
            level = ["", "", "", 0] if lv is None else [json.dumps(lv.level), lv.mean, lv.sem,
                                                         lv.n]
            writer.writerow([p.parameter, p.importance, p.importance_se, *level, p.note])
    return out.getvalue()


def _head(data, analysed: int, top_fraction: float | None) -> str:
    """What the analysis rests on: trials analysed, per state, diverged, and paused trials
    left out (a multi-fidelity search's rung results)."""
    counts = counts_text(data.counts)
    top = "" if top_fraction is None else f" (top {top_fraction:g})"
    paused = f"; {data.paused_note()}" if data.paused else ""
    return (f"experiment {data.experiment}: {analysed} trials analysed{top}; {counts}; "
            f"{data.diverged} diverged (counted at chance level){paused}")


def _table_text(report, data) -> str:
    rows = []
    for p in report.parameters:
        levels = "  ".join(f"{json.dumps(lv.level)}: {lv.mean:.4f}"
                           f"{'' if lv.sem is None else f' ± {lv.sem:.4f}'} (n={lv.n})"
                           for lv in p.levels)
        rows.append([p.parameter, p.importance, p.importance_se, levels + (
            f"  [{p.note}]" if p.note else "")])
    return (_head(data, report.analysed, report.top_fraction) + "\n"
            + table(["parameter", "importance", "± SE", "levels: mean ± SEM (n)"], rows))


def _check_parameters(asked: list[str] | None, valid: list[str], kind: str,
                      rows: list) -> None:
    """Named parameters must be in the space and must have varied over the analysed trials."""
    unknown = [p for p in asked or [] if p not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} parameter(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(valid) or 'none'}")
    for name in asked or []:
        values = {json.dumps(r["params"][name]) for r in rows if name in r["params"]}
        if len(values) == 1:
            n = sum(name in r["params"] for r in rows)
            raise ValueError(f"parameter {name!r} never varied: all {n} analysed trials where "
                             f"it is active have {values.pop()}")


def run_importance(args: argparse.Namespace) -> int:
    from localrules.analysis.importance import experiment_data, importance_report, top_rows
    from localrules.spaces.nodes import Choice, walk
    from localrules.store import open_store

    out = check_out_dir(args.out)
    with open_store(args.db, read_only=True) as store:
        data = experiment_data(store, args.experiment)
        url = store.url
        progress = None
        if out is not None and args.method == "categorical":
            from localrules.analysis.progress import experiment_progress

            progress = experiment_progress(store, args.experiment)
    nodes = list(walk(data.space.nodes))
    rows = top_rows(data.rows, args.top_fraction)
    if args.method == "model":
        _check_parameters(args.parameters, [n.name for n in nodes], "search", rows)
        return _run_model(args, data, rows, out)
    _check_parameters(args.parameters, [n.name for n in nodes if isinstance(n, Choice)],
                      "categorical", rows)
    report = importance_report(data, args.top_fraction, args.parameters)
    as_json = [p.to_dict() for p in report.parameters]
    print_report(args.format, as_json, lambda: _csv_text(report),
                 lambda: _table_text(report, data))
    if out is not None:
        _write_importance(out, report, as_json, progress, url)
    return 0


def _write_importance(out: Path, report, as_json, progress, url: str) -> None:
    from localrules.analysis.html_report import importance_html
    from localrules.analysis.plots import importance_figure, png_bytes, progress_figure
    from localrules.store.urls import redact

    figures: dict[str, bytes | None] = {"importance": None, "progress": None}
    if any(p.estimable for p in report.parameters):
        figures["importance"] = png_bytes(importance_figure(
            report.parameters, f"{report.experiment}: importance ({report.analysed} trials)"))
    else:
        log.warning("no parameter has an estimable importance yet: importance.png not written")
    figures["progress"] = png_bytes(progress_figure([progress]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "importance.json").write_text(json.dumps(as_json, indent=2))
    (out / "importance.csv").write_text(_csv_text(report))
    if figures["importance"] is not None:
        (out / "importance.png").write_bytes(figures["importance"])
    (out / "progress.png").write_bytes(figures["progress"])
    (out / "report.html").write_text(
        importance_html(report, figures, redact(url), progress.references, progress.best_so_far),
        encoding="utf-8")
    log.info("wrote the importance report to %s", out / "report.html")


def _run_model(args: argparse.Namespace, data, rows: list, out: Path | None) -> int:
    from localrules.analysis.model_importance import model_importance
    from localrules.spaces.nodes import walk

    names = [n.name for n in walk(data.space.nodes)]
    result = [m.to_dict() for m in model_importance(rows, names, n_bootstrap=args.bootstrap,
                                                       seed=args.seed)]
    if args.parameters:
        result = [m for m in result if m["parameter"] in args.parameters]
    print_report(args.format, result, lambda: dict_csv(result), lambda: (
        _head(data, len(rows), args.top_fraction) + "\nrandom-forest permutation importance "
        f"(drop in R²), mean ± SD over {args.bootstrap} bootstrap resamples\n"
        + table(["parameter", "importance", "± SE", "n active"],
                [[m["parameter"], m["importance"], m["importance_se"], m["n"]]
                 for m in result])))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "model_importance.json").write_text(json.dumps(result, indent=2))
        (out / "model_importance.csv").write_text(dict_csv(result))
    return 0


def run_progress(args: argparse.Namespace) -> int:
    from localrules.analysis.progress import experiment_progress, progress_rows
    from localrules.store import open_store

    out = check_out_dir(args.out)
    if len(set(args.experiments)) != len(args.experiments):
        raise ValueError(f"--experiment repeated: {', '.join(args.experiments)}")
    with open_store(args.db, read_only=True) as store:
        progress = [experiment_progress(store, name) for name in args.experiments]
    rows = progress_rows(progress, args.x_axis)
    as_json = [p.to_dict() for p in progress]
    print_report(args.format, as_json, lambda: dict_csv(rows), lambda: _progress_table(progress))
    if out is not None:
        from localrules.analysis.plots import progress_figure, save_png

        figure = progress_figure(progress, args.x_axis)
        out.mkdir(parents=True, exist_ok=True)
        (out / "progress.json").write_text(json.dumps(as_json, indent=2))
        (out / "progress.csv").write_text(dict_csv(rows))
        save_png(figure, out / "progress.png")
    return 0


def _progress_table(progress) -> str:
    """One row per experiment: counts, the best full-budget objective (and the trial-epochs
    spent when it was first reached) beside all the trial-epochs spent; paused trials
    (multi-fidelity rung results) are counted apart, never the best."""
    rows = []
    for p in progress:
        best = [b for b in p.best_so_far if b is not None]
        startup = [t.objective for t in p.points if t.startup and t.full_budget]
        warm = [t.objective for t in p.points if t.warm_start and t.full_budget]
        counts = counts_text(p.counts())
        top = best[-1] if best else None
        rows.append([p.experiment, len(p.points), counts, p.diverged, p.paused,
                     p.startup_trials, max(startup, default=None), max(warm, default=None),
                     top, p.references.gap_closed(top), p.trial_epochs,
                     None if top is None else p.epochs_to(top)])
    lines = [table(["experiment", "trials", "states", "diverged", "paused", "random startup",
                    "best in startup", "warm start", "best", "gap closed", "trial-epochs",
                    "to best"], rows)]
    lines += [f"{p.experiment} references: {p.references.describe()}" for p in progress]
    return "\n".join(lines)
