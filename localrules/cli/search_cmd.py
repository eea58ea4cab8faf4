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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localrules.cli.tables import artifacts_location, fmt
from localrules.store import FINISHED
from localrules.store.urls import add_db_argument

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
"""Ctrl-C; SIGTERM exits with 143 (128 + 15). Either way the trials went back to the queue."""
EXIT_TERMINATED = 143
EXIT_WORKERS_DIED = 1
DEFAULT_MAX_TRIALS = 12
MAX_POLL = 30.0
DATASETS_REQUIRING_DIR = ("cifar10", "imagenet")


def register(sub: argparse._SubParsersAction) -> None:
    from localrules.raytune.engine import SCHEDULERS
    from localrules.search.settings import ENGINES
    from localrules.spaces import PAPER_SPACES

    p = sub.add_parser(
        "search", help="run a TPE search over a learning-rule space",
        description="Run (or resume) a TPE search: a controller queues trials in the database "
                    "and local worker processes train them. Defaults run offline on digits.")
    p.add_argument("--space", required=True,
                   help=f"{', '.join(PAPER_SPACES)}, or a YAML space file")
    p.add_argument("--experiment", required=True, help="experiment name (re-use to resume)")
    add_db_argument(p)
    p.add_argument("--max-trials", type=int,
                   help=f"trials in all (default {DEFAULT_MAX_TRIALS}; on resume: as stored)")
    p.add_argument("--concurrency", type=int,
                   help="trials queued or running at once (default: --workers, or 4 with "
                        "none; on resume: as stored)")
    p.add_argument("--workers", type=int, default=2,
                   help="local worker processes (default 2; 0 = queue only, for remote workers)")
    p.add_argument("--model", help="e.g. resnet18 (default)")
    p.add_argument("--dataset", default="digits", help="digits (default), cifar10, imagenet, "
                                                         "synthetic")
    p.add_argument("--data-dir", help="directory of the dataset's files (cifar10, imagenet)")
    p.add_argument("--width", type=int, help="first group's channels (default per dataset)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default per dataset)")
    p.add_argument("--image-size", type=int,
                   help="image side the model sees (default per dataset; digits upsample)")
    p.add_argument("--batch-sizes",
                   help="the batch-size choices of the +AD spaces, e.g. 16,32,64,128 (default "
                        "per dataset); the learning rate is linear in the batch")
    p.add_argument("--references",
                   help="presets trained beside the search under its budget and seed: none, "
                        "or a list such as bp,fa (default) or bp,fa,sa (on resume: as stored)")
    p.add_argument("--reference-seeds", type=int,
                   help="replicates of each reference, reported as mean ± SEM (default 1; on "
                        "resume: as stored)")
    p.add_argument("--no-warm-start", action="store_true",
                   help="do not queue the space's warm start (a paper space's published rule) "
                        "as the first trial")
    p.add_argument("--seed", type=int,
                   help="seed of the suggestions and the trials (default 0; on resume: as stored)")
    p.add_argument("--startup-trials", type=int,
                   help="random trials before TPE (default: a third of --max-trials, ≤ 20)")
    p.add_argument("--gamma", type=float, help="TPE's good-trial quantile γ (default 0.25)")
    p.add_argument("--ei-candidates", type=int, help="TPE's EI candidates (default 24)")
    p.add_argument("--artifacts", default="localrules-artifacts",
                   help="directory for trial checkpoints and histories")
    p.add_argument("--lease", type=float, default=60.0, help="worker lease in seconds")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between controller rounds")
    p.add_argument("--show-space", action="store_true", help="print the space and exit")
    ray = p.add_argument_group("Ray Tune engine (--engine ray; pip install 'localrules[ray]')")
    ray.add_argument("--engine", choices=ENGINES, default="store",
                     help="store: the controller queues trials for workers (default); ray: Ray "
                          "Tune runs them (docs/ray.md)")
    ray.add_argument("--ray-address", help="auto, HOST:PORT or ray://HOST:PORT of a Ray cluster "
                                           "(default: start a local Ray instance)")
    ray.add_argument("--resources-per-trial",
                     help="e.g. cpu=2,gpu=1 or cpu=8,TPU=4 (default cpu=1; on resume: as stored)")
    ray.add_argument("--max-failures", type=int,
                     help="retries of a failed trial from its last checkpoint (default 2; on "
                          "resume: as stored)")
    ray.add_argument("--scheduler", choices=SCHEDULERS,
                     help="asha: stop clearly bad trials early on the objective (default none; "
                          "on resume: as stored)")
    p.set_defaults(handler=run)


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def search_settings(args: argparse.Namespace, stored: Mapping[str, Any] | None):
    """The search settings: the stored ones on resume (or the defaults for a new experiment),
    with the flags given on the command line on top."""
    from localrules.search import SearchSettings

    if stored is None:
        max_trials = args.max_trials or DEFAULT_MAX_TRIALS
        base: dict[str, Any] = {
            "max_trials": max_trials, "seed": 0,
            "concurrency": args.workers if args.workers > 0 else 4,
            "tpe": {"n_startup_jobs": min(20, max(1, max_trials // 3))},
        }
    else:
        base = json.loads(json.dumps(dict(stored)))
    given = {"max_trials": args.max_trials, "concurrency": args.concurrency, "seed": args.seed,
             "references": references_flag(args.references),
             "reference_seeds": args.reference_seeds,
             "warm_start": False if args.no_warm_start else None}
    tpe = {"n_startup_jobs": args.startup_trials, "gamma": args.gamma,
           "n_ei_candidates": args.ei_candidates}
    base.update({k: v for k, v in given.items() if v is not None})
    base["engine"] = args.engine
    base["ray"] = ray_options(args, base.get("ray")).settings() if args.engine == "ray" else {}
    base["tpe"] = {**base.get("tpe", {}), **{k: v for k, v in tpe.items() if v is not None}}
    return SearchSettings.from_dict(base)


def references_flag(text: str | None) -> list[str] | None:
    """``--references``: None when not given, [] for ``none``, else the listed presets (checked
    by the settings)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [part.strip() for part in text.split(",") if part.strip()] or [text]


def batch_sizes_flag(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--batch-sizes must be a list of integers such as 16,32,64,128, got "
                         f"{text!r}") from None


def _missing_file(spec: str) -> bool:
    from localrules.spaces import PAPER_SPACES

    return spec not in PAPER_SPACES and spec.endswith((".yaml", ".yml")) \
        and not Path(spec).exists()


def build_inputs(args: argparse.Namespace):
    """The space (None when its YAML file is gone: a resume rebuilds it from the store) and the
    budget, with every flag validated; nothing is written."""
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.spaces import default_budget, load_space
    from localrules.store.documents import check_experiment_name
    from localrules.store.urls import sqlite_path
    from localrules.validation import check_choice

    check_experiment_name(args.experiment)
    for name in ("max_trials", "concurrency", "width", "epochs", "image_size", "startup_trials",
                 "ei_candidates", "lease", "poll", "reference_seeds"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.poll is not None and args.poll > MAX_POLL:
        raise ValueError(f"--poll must be at most {MAX_POLL:g} s (the controller's lock lasts "
                         f"{2 * MAX_POLL:g} s between rounds), got {args.poll}")
    if args.db.startswith("sqlite:") and sqlite_path(args.db) == ":memory:":
        raise ValueError("--db sqlite:// is an in-memory database that worker processes cannot "
                         "share; give a file, e.g. sqlite:///localrules.db")
    check_choice("dataset", args.dataset, DATASETS)
    if args.model is not None:
        check_choice("model", args.model, MODELS)
    if args.dataset in DATASETS_REQUIRING_DIR and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (the dataset's files)")
    if args.data_dir and "://" not in args.data_dir and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir!r} is not a directory")
    budget = default_budget(args.dataset, model=args.model, width=args.width,
                            epochs=args.epochs, image_size=args.image_size,
                            batch_sizes=batch_sizes_flag(args.batch_sizes),
                            data_dir=args.data_dir)
    space = None if _missing_file(args.space) else load_space(args.space, budget)
    if args.engine == "ray":
        from localrules.raytune import require_ray

        require_ray()
    search_settings(args, None)  # the flags' values are checked before anything is opened
    return space, budget


def ray_options(args: argparse.Namespace, recorded: Mapping[str, Any] | None = None):
    """The Ray engine's options: the flags given, else those the experiment recorded (on
    resume), else the defaults (ValueError naming a bad one)."""
    from localrules.raytune.engine import RayOptions

    given = {"resources": args.resources_per_trial, "max_failures": args.max_failures,
             "scheduler": args.scheduler}
    chosen = {**dict(recorded or {}), **{k: v for k, v in given.items() if v is not None}}
    return RayOptions(storage=artifacts_location(args.artifacts), address=args.ray_address,
                      **chosen)


def _recorded(args: argparse.Namespace) -> Mapping[str, Any] | None:
    """The stored settings of the experiment being resumed (None for a new one); reads only."""
    from localrules.store import open_store

    try:
        store = open_store(args.db, create=False)
    except ValueError:  # no database yet
        return None
    with store:
        existing = store.get_experiment(args.experiment)
    return None if existing is None else existing.settings


def summary(experiment, space, settings, trials: list, engine_note: str = "") -> str:
    """What a finished search prints: counts, the references, the leaderboard with each trial's
    gap closed, and the best trial."""
    from localrules.cli.trials_cmd import leaderboard
    from localrules.store.documents import best_objective, state_counts
    from localrules.store.references import references_of, search_trials

    references = references_of(trials, settings.references)
    counts = state_counts(search_trials(trials))
    lines = [f"experiment {experiment.name}{engine_note}: {counts['done']} done, "
             f"{counts['failed']} failed of {settings.max_trials}; space {space.name}; "
             f"{space.describe_budget()}",
             leaderboard(trials, references)]
    best = best_objective(trials)
    if best is not None:
        gap = references.gap_closed(best.objective)
        lines.append(f"best trial {best.trial_id}: objective {best.objective:.4f}, gap closed "
                     f"{fmt(gap)}; params: {json.dumps(dict(best.params))}")
    return "\n".join(lines)


class _Display:
    """A progress bar over finished trials (reference runs included) with running/queued
    counts, the best so far and its gap closed."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled,
                        file=sys.stderr)
        self.last: Any = None

    def __call__(self, status) -> None:
        finished = sum(status.counts[s] for s in FINISHED)
        self.bar.total = max(self.bar.total, sum(status.counts.values()))
        self.bar.n = finished
        best = status.best.objective if status.best is not None else None
        gap = status.references.gap_closed(best)
        self.bar.set_postfix(running=status.counts["running"], queued=status.counts["queued"],
                             best=fmt(best), gap=fmt(gap), refresh=False)
        self.bar.refresh()
        if best is not None and (best, gap) != self.last:
            log.info("best so far: trial %d, objective %.4f, gap closed %s",
                     status.best.trial_id, best, fmt(gap))
            self.last = (best, gap)

    def close(self) -> None:
        self.bar.close()


def _stored_space(args: argparse.Namespace, budget):
    """A resumed YAML search whose file is gone: its space as stored with the experiment."""
    from localrules.spaces import space_from_source
    from localrules.store import open_store

    missing = f"cannot read space file {args.space!r}: no such file"
    try:
        store = open_store(args.db, create=False)
    except ValueError:
        raise ValueError(missing) from None
    with store:
        existing = store.get_experiment(args.experiment)
    if existing is None or "yaml" not in existing.space_source:
        raise ValueError(missing)
    log.info("%s is gone; using the space stored with experiment %r", args.space,
             args.experiment)
    return space_from_source(existing.space_source, budget)


def run(args: argparse.Namespace) -> int:
    space, budget = build_inputs(args)
    if space is None:
        space = _stored_space(args, budget)
    if args.show_space:
        print(space.describe())
        return 0
    if args.engine == "ray":
        from localrules.raytune.engine import ray_session

        recorded = (_recorded(args) or {}).get("ray")
        with ray_session(ray_options(args, recorded)):  # checked before anything is written
            return _search(args, space)
    return _search(args, space)


def _search(args: argparse.Namespace, space) -> int:
    from localrules.search import Controller
    from localrules.search.settings import check_same_search, new_experiment, settings_update
    from localrules.store import open_store
    from localrules.store.urls import redact
    from localrules.worker.local import (
        LocalWorkerSpec,
        start_local_workers,
        stop_local_workers,
        threads_per_worker,
    )

    with open_store(args.db) as store:
        existing = store.get_experiment(args.experiment)
        if existing is not None:
            check_same_search(existing, space, store.url)
        settings = search_settings(args, None if existing is None else existing.settings)
        experiment = existing or store.create_experiment(
            new_experiment(args.experiment, space, settings))
        check_same_search(experiment, space, store.url)  # another process may have created it
        controller = Controller(store, experiment, space, settings)
        controller.acquire_lock()  # before anything of a running search is touched
        try:
            update = settings_update(experiment, settings)
        except ValueError:
            controller.release_lock()
            raise
        if update:
            store.update_settings(experiment.name, update)
        log.info("%s experiment %r in %s: %s", "resuming" if existing else "starting",
                 experiment.name, redact(store.url), space.describe_budget())
        if settings.engine == "ray":
            try:
                return _run_on_ray(args, store, experiment, space, settings, controller)
            finally:
                controller.release_lock()
        controller.step()
        spec = LocalWorkerSpec(url=args.db, artifacts=artifacts_location(args.artifacts),
                               experiments=(experiment.name,), lease_seconds=args.lease,
                               threads=threads_per_worker(args.workers),
                               log_level=logging.getLogger().level)
        display = _Display(settings.max_trials + len(settings.references)
                           * settings.reference_seeds, enabled=sys.stderr.isatty())
        stop: dict[str, Any] = {"exit": None}
        procs: list = []

        def on_sigterm(*_: Any) -> None:
            stop["exit"] = EXIT_TERMINATED

        def should_stop() -> bool:
            if procs and not any(p.is_alive() for p in procs):
                codes = ", ".join(str(p.exitcode) for p in procs)
                log.error("every local worker has exited (exit codes %s); stopping", codes)
                stop["exit"] = EXIT_WORKERS_DIED
            return stop["exit"] is not None

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            procs += start_local_workers(spec, args.workers) if args.workers else []
            controller.run(poll_seconds=args.poll, on_status=display, should_stop=should_stop)
        except KeyboardInterrupt:
            stop["exit"] = EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)
            display.close()
            stop_local_workers(procs)
        trials = store.trials(experiment.name)
    if stop["exit"] is not None:
        if stop["exit"] != EXIT_WORKERS_DIED:
            print(f"search stopped; running trials went back to the queue; run the same "
                  f"command to resume experiment {experiment.name!r}", file=sys.stderr)
        return stop["exit"]
    print(summary(experiment, space, settings, trials))
    return 0


def _run_on_ray(args: argparse.Namespace, store, experiment, space, settings,
                controller) -> int:
    """The search on Ray Tune (new or restored), then the same summary as the store engine;
    exit 130 when Tune stopped before every trial finished (Ctrl-C), to be resumed."""
    from localrules.raytune.engine import run_ray_search
    from localrules.store import FINISHED
    from localrules.store.documents import state_counts
    from localrules.store.references import search_trials

    run_ray_search(args.db, experiment, space, settings, ray_options(args, settings.ray),
                   lock=controller.lock)
    trials = store.trials(experiment.name)
    counts = state_counts(search_trials(trials))
    if sum(counts[s] for s in FINISHED) < settings.max_trials:
        print(f"search stopped before its {settings.max_trials} trials finished; run the same "
              f"command to resume experiment {experiment.name!r}", file=sys.stderr)
        return EXIT_INTERRUPTED
    stopped = sum(bool((t.result or {}).get("stopped_early")) for t in trials)
    print(summary(experiment, space, settings, trials,
                  engine_note=f" (Ray; {stopped} stopped early)"))
    return 0
