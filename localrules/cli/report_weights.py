"""``localrules report weights``: how a run's forward and backward weights evolved (appendix C).

Writes Fig. S4 (per-layer angle between W and B and ‖B‖_F/‖W‖_F over training, coloured by
depth) and Fig. S3 (sampled (W_ij, B_ji) pairs of one layer at chosen validation points, with the
symmetry diagonal) for a run directory, or for a search's trial, whose directory the worker
recorded in the trial's progress and result (``--artifacts`` points elsewhere when the files
were copied off the worker).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from localrules.cli.arguments import add_db_argument, number
from localrules.cli.tables import table
from localrules.validation import EPOCHS, TRIAL_ID, Limit

EPOCH = Limit(0, EPOCHS.maximum, integer=True)
"""A validation epoch (0: initialisation)."""

log = logging.getLogger(__name__)


def register(reports: argparse._SubParsersAction) -> None:
    p = reports.add_parser("weights", help="weight alignment over training (Figs. S3, S4)",
                           description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run directory (written by `localrules train` or a "
                                      "worker)")
    source.add_argument("--experiment", help="an experiment; with --trial")
    p.add_argument("--trial", type=number(TRIAL_ID), help="the trial id, with --experiment")
    add_db_argument(p)
    p.add_argument("--artifacts", help="where the trial directories are, if not where the "
                                       "worker wrote them (ARTIFACTS/EXPERIMENT/trial-NNNNN)")
    p.add_argument("--layer", help="layer of the weight scatter (default: the third)")
    p.add_argument("--epochs", type=number(EPOCH), nargs="+", metavar="E",
                   help="validation epochs of the weight scatter (0 = initialisation; default: "
                        "up to four spread over training)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--out", required=True, help="write weight_metrics.png/.csv and "
                                                "weight_scatter_LAYER.png here")
    p.set_defaults(handler=run)


def _trial_run_dir(args: argparse.Namespace) -> str:
    from localrules.runs import is_remote, run_files_dir, trial_dir
    from localrules.store import open_store

    with open_store(args.db, read_only=True) as store:
        store.require_experiment(args.experiment)
        trial = store.get_trial(args.experiment, args.trial)
        if trial is None:
            ids = [t.trial_id for t in store.history(args.experiment)]
            span = f"{min(ids)}–{max(ids)}" if ids else "none"
            raise ValueError(f"experiment {args.experiment!r} has no trial {args.trial}; "
                             f"trial ids: {span}")
    if args.artifacts:
        return run_files_dir(trial_dir(args.artifacts, trial))
    recorded = (trial.result or {}).get("run_dir") or (trial.progress or {}).get("run_dir")
    if not recorded:
        raise ValueError(f"trial {args.trial} of {args.experiment!r} ({trial.state}) has no run "
                         "directory on record yet; pass --artifacts DIR or --run DIR")
    if not is_remote(recorded) and not Path(recorded).is_dir():
        raise ValueError(f"trial {args.trial}'s files are at {recorded} on the worker "
                         f"{trial.worker or '?'}, not on this machine; copy them here and pass "
                         "--artifacts DIR or --run DIR")
    return recorded


def run(args: argparse.Namespace) -> int:
    from localrules.analysis.weight_report import scatter_samples, weight_history
    from localrules.cli.tables import check_out_dir, dict_csv, print_report

    if (args.experiment is None) != (args.trial is None):
        raise ValueError("--experiment and --trial go together (or give --run DIR)")
    out = check_out_dir(args.out)
    run_dir = args.run if args.run else _trial_run_dir(args)
    if args.run and "://" not in run_dir and not Path(run_dir).is_dir():
        raise ValueError(f"--run {run_dir!r} is not a directory")
    history = weight_history(run_dir)
    try:
        layer, samples = scatter_samples(run_dir, args.layer, args.epochs)
    except ValueError as err:
        if args.layer or args.epochs:
            raise
        log.warning("no weight scatter: %s", err)
        layer, samples = None, []
    rows = history.rows()
    print_report(args.format, rows, lambda: dict_csv(rows), lambda: _summary(history))

    from localrules.analysis.plots import save_png, weight_metrics_figure, weight_scatter_figure

    title = f"{run_dir.rstrip('/').rsplit('/', 1)[-1]}: weight metrics"
    metrics = weight_metrics_figure(history.epochs, history.angles, history.norm_ratios, title)
    scatter = weight_scatter_figure(samples, layer) if samples else None
    out.mkdir(parents=True, exist_ok=True)
    save_png(metrics, out / "weight_metrics.png")
    (out / "weight_metrics.csv").write_text(dict_csv(rows))
    if scatter is not None:
        save_png(scatter, out / f"weight_scatter_{layer}.png")
    log.info("wrote the weight figures to %s", out)
    return 0


def _summary(history) -> str:
    first, last = history.epochs[0], history.epochs[-1]
    rows = [[d + 1, name, history.angles[name][0], history.angles[name][-1],
             history.norm_ratios[name][0], history.norm_ratios[name][-1]]
            for d, name in enumerate(history.layers)]
    return (f"{history.run_dir}: {len(history.epochs)} validation points, epochs {first}–{last}\n"
            + table(["depth", "layer", f"angle° @{first}", f"angle° @{last}",
                     f"‖B‖/‖W‖ @{first}", f"‖B‖/‖W‖ @{last}"], rows))
