"""``localrules search``: run a TPE search (controller plus local workers) and print a leaderboard.

Every input is checked before anything is written: the space (paper name or YAML file), the
budget (model, dataset, data directory, width, epochs), the search settings, the database URL,
and, when the experiment exists, that it is the same search (space and budget). Re-running the
same command resumes the search; Ctrl-C (or SIGTERM) stops the local workers, whose running trials
checkpoint and go back to the queue.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from localrules.cli.tables import fmt, table, terminal_width
from localrules.store import DEFAULT_URL

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
DATASETS_REQUIRING_DIR = ("cifar10", "imagenet")


def register(sub: argparse._SubParsersAction) -> None:
    from localrules.spaces import PAPER_SPACES

    p = sub.add_parser(
        "search", help="run a TPE search over a learning-rule space",
        description="Run (or resume) a TPE search: a controller queues trials in the database "
                    "and local worker processes train them. Defaults run offline on digits.")
    p.add_argument("--space", required=True,
                   help=f"{', '.join(PAPER_SPACES)}, or a YAML space file")
    p.add_argument("--experiment", required=True, help="experiment name (re-use to resume)")
    p.add_argument("--db", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument("--max-trials", type=int, default=12, help="trials in all (default 12)")
    p.add_argument("--concurrency", type=int,
                   help="trials queued or running at once (default: --workers, or 4 with none)")
    p.add_argument("--workers", type=int, default=2,
                   help="local worker processes (default 2; 0 = queue only, for remote workers)")
    p.add_argument("--model", help="e.g. resnet18 (default)")
    p.add_argument("--dataset", default="digits", help="digits (default), cifar10, imagenet, "
                                                         "synthetic")
    p.add_argument("--data-dir", help="directory of the dataset's files (cifar10, imagenet)")
    p.add_argument("--width", type=int, help="first group's channels (default per dataset)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default per dataset)")
    p.add_argument("--batch-divisor", type=int,
                   help="divide the paper's batch sizes by this (default per dataset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the suggestions and the trials")
    p.add_argument("--startup-trials", type=int,
                   help="random trials before TPE (default: a third of --max-trials, ≤ 20)")
    p.add_argument("--gamma", type=float, default=0.25, help="TPE's good-trial quantile γ")
    p.add_argument("--ei-candidates", type=int, default=24, help="TPE's EI candidates")
    p.add_argument("--artifacts", default="localrules-artifacts",
                   help="directory for trial checkpoints and histories")
    p.add_argument("--lease", type=float, default=60.0, help="worker lease in seconds")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between controller rounds")
    p.add_argument("--show-space", action="store_true", help="print the space and exit")
    p.set_defaults(handler=run)


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def build_inputs(args: argparse.Namespace):
    """Budget, space and settings from the arguments, all validated; nothing is written."""
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.search import SearchSettings, TpeSettings
    from localrules.spaces import default_budget, load_space
    from localrules.store.documents import check_experiment_name
    from localrules.validation import check_choice

    check_experiment_name(args.experiment)
    for name in ("max_trials", "concurrency", "width", "epochs", "batch_divisor",
                 "startup_trials", "ei_candidates", "lease", "poll"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    check_choice("dataset", args.dataset, DATASETS)
    if args.model is not None:
        check_choice("model", args.model, MODELS)
    if args.dataset in DATASETS_REQUIRING_DIR and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (the dataset's files)")
    if args.data_dir and "://" not in args.data_dir and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir!r} is not a directory")
    budget = default_budget(args.dataset, model=args.model, width=args.width,
                            epochs=args.epochs, batch_divisor=args.batch_divisor,
                            data_dir=args.data_dir)
    space = load_space(args.space, budget)
    startup = args.startup_trials or min(20, max(1, args.max_trials // 3))
    concurrency = args.concurrency or (args.workers if args.workers > 0 else 4)
    settings = SearchSettings(
        max_trials=args.max_trials, concurrency=concurrency, seed=args.seed,
        tpe=TpeSettings(n_startup_jobs=startup, gamma=args.gamma,
                        n_ei_candidates=args.ei_candidates),
    )
    return space, settings



def leaderboard(trials: list, limit: int = 10) -> str:
    from localrules.cli.trials_cmd import params_text, sort_trials

    best = [t for t in sort_trials(trials, "objective") if t.objective is not None][:limit]
    rows = [[t.trial_id, t.result.get("objective"), t.result.get("top1"),
             t.result.get("diverged"), params_text(dict(t.params))] for t in best]
    return table(["trial", "objective", "top1", "diverged", "params"], rows,
                 max_width=terminal_width())


class _Display:
    """A progress bar over finished trials with running/queued counts and the best so far."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled,
                        file=sys.stderr)
        self.last_best: Any = None

    def __call__(self, status) -> None:
        finished = sum(status.counts[s] for s in ("done", "failed", "cancelled"))
        self.bar.total = max(self.bar.total, status.created)
        self.bar.n = finished
        best = status.best.objective if status.best is not None else None
        self.bar.set_postfix(running=status.counts["running"], queued=status.counts["queued"],
                             best=fmt(best), refresh=False)
        self.bar.refresh()
        if best is not None and best != self.last_best:
            log.info("best so far: trial %d, objective %.4f", status.best.trial_id, best)
            self.last_best = best

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    space, settings = build_inputs(args)
    if args.show_space:
        print(space.describe())
        return 0

    from localrules.search import Controller, open_experiment
    from localrules.store import open_store
    from localrules.store.urls import redact
    from localrules.worker.local import (
        LocalWorkerSpec,
        start_local_workers,
        stop_local_workers,
        threads_per_worker,
    )

    with open_store(args.db) as store:
        experiment = open_experiment(store, args.experiment, space, settings)
        counts = store.counts(experiment.name)
        resumed = sum(counts.values())
        log.info("%s experiment %r in %s: %s", "resuming" if resumed else "starting",
                 experiment.name, redact(store.url), space.budget.describe())
        controller = Controller(store, experiment, space, settings)
        controller.step()  # fails fast if another controller holds the experiment
        spec = LocalWorkerSpec(url=args.db, artifacts=str(Path(args.artifacts).resolve()),
                               experiments=(experiment.name,), lease_seconds=args.lease,
                               threads=threads_per_worker(args.workers),
                               log_level=logging.getLogger().level)
        procs = start_local_workers(spec, args.workers) if args.workers else []
        display = _Display(settings.max_trials, enabled=sys.stderr.isatty())
        stopping = {"flag": False}
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.update(flag=True))
        try:
            status = controller.run(poll_seconds=args.poll, on_status=display,
                                    should_stop=lambda: stopping["flag"])
        except KeyboardInterrupt:
            stopping["flag"] = True
        finally:
            signal.signal(signal.SIGTERM, previous)
            display.close()
            stop_local_workers(procs)
        trials = store.trials(experiment.name)
    if stopping["flag"]:
        print(f"search interrupted; run the same command to resume experiment "
              f"{experiment.name!r}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"experiment {experiment.name}: {status.done} done, {status.counts['failed']} failed "
          f"of {settings.max_trials}; space {space.name}; {space.budget.describe()}")
    print(leaderboard(trials))
    if status.best is not None:
        print("best trial", status.best.trial_id, "params:", json.dumps(dict(status.best.params)))
    return 0
