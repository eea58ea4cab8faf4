"""``localrules search``: flags → the search API (``search.session``) → a leaderboard. Every flag
is checked before anything is written; re-running the same command resumes the search."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from localrules.cli.arguments import add_db_argument, number
from localrules.cli.tables import artifacts_location
from localrules.search.engine import INTERRUPTED, TERMINATED, WORKERS_EXITED

EXIT = {INTERRUPTED: 130, TERMINATED: 143, WORKERS_EXITED: 1}
"""Ctrl-C 130; SIGTERM 143 (128 + 15); 1 when every local worker died."""
FLAGS = {"resources": "--resources-per-trial", "address": "--ray-address",
         "storage": "--artifacts", "lease_seconds": "--lease", "poll_seconds": "--poll"}
RESUME = "on resume: as stored"


def register(sub: argparse._SubParsersAction) -> None:
    from localrules.raytune.engine import MAX_FAILURES
    from localrules.search.fidelity import BRACKETS, FIDELITIES, REDUCTION, SCHEDULERS
    from localrules.search.settings import CONCURRENCY, ENGINES, GAMMA
    from localrules.spaces import PAPER_SPACES
    from localrules.validation import (
        EPOCHS,
        IMAGE_SIZE,
        INTERVAL,
        REPLICATES,
        SEED,
        TRIALS,
        WIDTH,
        WORKERS,
    )
    from localrules.worker.engine import POLL

    p = sub.add_parser(
        "search", help="run a TPE search over a learning-rule space",
        description="Run (or resume) a TPE search: a controller queues trials in the database "
                    "and local worker processes train them. Defaults run offline on digits.")
    add = p.add_argument
    add("--space", required=True, help=f"{', '.join(PAPER_SPACES)}, or a YAML space file")
    add("--experiment", required=True, help="experiment name (re-use to resume)")
    add_db_argument(p)
    add("--max-trials", type=number(TRIALS), help=f"trials in all (default 12; {RESUME})")
    add("--concurrency", type=number(CONCURRENCY),
        help=f"trials at once (default --workers or 4; {RESUME})")
    add("--workers", type=number(WORKERS),
        default=2, help="local worker processes (default 2; 0: none)")
    add("--model", help="e.g. resnet18 (default)")
    add("--dataset", default="digits", help="digits (default), cifar10, imagenet, synthetic")
    add("--data-dir", help="directory of the dataset's files (cifar10, imagenet)")
    add("--width", type=number(WIDTH), help="first group's channels (default per dataset)")
    add("--epochs", type=number(EPOCHS), help="epochs per trial (default per dataset)")
    add("--image-size", type=number(IMAGE_SIZE),
        help="image side the model sees (default per dataset)")
    add("--batch-sizes", help="the batch-size choices of the +AD spaces, e.g. 16,32,64,128 "
                              "(default per dataset); the learning rate is linear in the batch")
    add("--references", help=f"presets trained beside the search under its budget and seed: "
                             f"none, or a list such as bp,fa (default) or bp,fa,sa ({RESUME})")
    add("--reference-seeds", type=number(REPLICATES),
        help=f"replicates of each reference, reported as mean ± SEM (default 1; {RESUME})")
    add("--no-warm-start", action="store_true", help="no published rule as the first trial")
    add("--seed", type=number(SEED), help=f"seed of suggestions and trials (default 0; {RESUME})")
    add("--startup-trials", type=number(TRIALS),
        help="random trials first (default max-trials/3, ≤ 20)")
    add("--gamma", type=number(GAMMA), help="TPE's good-trial quantile γ (default 0.25)")
    add("--ei-candidates", type=number(TRIALS), help="TPE's EI candidates (default 24)")
    add("--artifacts", default="localrules-artifacts", help="directory of the trials' files")
    add("--lease", type=number(INTERVAL), default=60.0, help="worker lease in seconds")
    add("--poll", type=number(POLL), default=1.0, help="seconds between controller rounds")
    add("--show-space", action="store_true", help="print the space and exit")
    add = p.add_argument_group(
        "multi-fidelity (docs/search.md): trials train to rungs of min-epochs·η^k epochs and "
        "the top 1/η of each rung goes on: on the store engine resuming from its checkpoint, "
        "on Ray (Ray's AsyncHyperBandScheduler, the same rungs) the others are stopped"
        ).add_argument
    add("--fidelity", choices=FIDELITIES, help=f"none: every trial trains the budget's epochs "
        f"(default); asha: asynchronous successive halving; hyperband: asha in several "
        f"brackets ({RESUME}, fixed)")
    add("--min-epochs", type=number(EPOCHS), help="epochs of the first rung (default: the "
        "first whole epoch past the budget's warm-up, e.g. 2 on digits, 6 on ImageNet)")
    add("--reduction-factor", type=number(REDUCTION),
        help="η: the top 1/η of a rung is promoted, rungs grow η-fold (default 3)")
    add("--brackets", type=number(BRACKETS),
        help="hyperband's brackets (default: one per rung below the last)")
    add = p.add_argument_group("Ray Tune engine (pip install 'localrules[ray]')").add_argument
    add("--engine", choices=ENGINES, default="store", help="store: the controller queues trials "
        "for workers (default); ray: Ray Tune runs them (docs/ray.md)")
    add("--ray-address", help="auto or HOST:PORT of a Ray cluster (default: a local one)")
    add("--resources-per-trial", help=f"e.g. cpu=2,gpu=1 or TPU=4 (default cpu=1; {RESUME})")
    add("--max-failures", type=number(MAX_FAILURES),
        help=f"retries from the last checkpoint (default 2; {RESUME})")
    add("--scheduler", choices=SCHEDULERS, help="the alias of --fidelity asha or none, kept "
        "from before --fidelity; not beside another --fidelity")
    # its workers' per-trial lines would flood the progress bar: WARNING unless -v or
    # --log-level (cli.main.log_levels)
    p.set_defaults(handler=run, flags=FLAGS, quiet_library=True)


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings the flags give (None: not given, so stored or default).
    ``--scheduler`` gives the fidelity's kind (ValueError beside another ``--fidelity``)."""
    from localrules.search.fidelity import scheduler_alias

    text = args.references
    references = None if text is None else [] if text.strip().lower() == "none" else [
        r.strip() for r in text.split(",") if r.strip()] or [text]  # checked by the settings
    return {"max_trials": args.max_trials, "concurrency": args.concurrency, "seed": args.seed,
            "references": references, "reference_seeds": args.reference_seeds,
            "warm_start": False if args.no_warm_start else None,
            "tpe": {"n_startup_jobs": args.startup_trials, "gamma": args.gamma,
                    "n_ei_candidates": args.ei_candidates},
            "fidelity": {"kind": scheduler_alias(args.scheduler, args.fidelity),
                         "min_epochs": args.min_epochs,
                         "reduction_factor": args.reduction_factor, "brackets": args.brackets}}


def budget(args: argparse.Namespace):
    """The trials' budget from the flags, each checked (ValueError naming the flag)."""
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.spaces import default_budget
    from localrules.validation import BATCH_SIZE, check_choice

    check_choice("dataset", args.dataset, DATASETS)
    if args.model is not None:
        check_choice("model", args.model, MODELS)
    if args.dataset in ("cifar10", "imagenet") and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (the dataset's files)")
    if args.data_dir and "://" not in args.data_dir and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir!r} is not a directory")
    try:
        sizes = None if args.batch_sizes is None else [
            BATCH_SIZE.parse("a batch size", b) for b in args.batch_sizes.split(",")]
    except ValueError as err:
        raise ValueError(f"--batch-sizes must be a list of batch sizes such as 16,32,64,128: "
                         f"{err}") from None
    return default_budget(args.dataset, model=args.model, width=args.width, epochs=args.epochs,
                          image_size=args.image_size, batch_sizes=sizes, data_dir=args.data_dir)


def engine(args: argparse.Namespace):
    """The engine the flags choose, its options checked (nothing connected yet)."""
    import logging

    if args.engine == "store":
        from localrules.worker.engine import StoreEngine

        return StoreEngine(artifacts_location(args.artifacts), workers=args.workers,
                           lease_seconds=args.lease, poll_seconds=args.poll,
                           log_level=logging.getLogger().level)
    from localrules.raytune.engine import RayEngine

    given = {"resources": args.resources_per_trial, "max_failures": args.max_failures,
             "scheduler": args.scheduler}
    return RayEngine.for_experiment(args.db, args.experiment, artifacts_location(args.artifacts),
                                    args.ray_address, given, logging.getLogger().level)


def run(args: argparse.Namespace) -> int:
    from localrules.cli.search_output import Display, summary
    from localrules.search.session import SearchSession, resolve_settings, resolve_space

    space = resolve_space(args.db, args.experiment, args.space, budget(args))
    if args.show_space:
        print(space.describe())
        return 0
    changes = settings_changes(args)
    chosen = engine(args)
    # every flag checked before Ray is even reached
    resolve_settings(None, changes, chosen.default_concurrency, space.budget)
    with chosen, SearchSession.open(args.db, args.experiment, space, changes, chosen) as session:
        with Display(session.settings, sys.stderr.isatty(), session.trials) as display:
            outcome = session.run(chosen, on_status=display)
        if outcome.stopped is not None:
            if outcome.stopped != WORKERS_EXITED:
                print(f"search stopped before its trials finished ({outcome.note}); run the "
                      f"same command to resume experiment {args.experiment!r}", file=sys.stderr)
            return EXIT[outcome.stopped]
        print(summary(session, outcome))
    return 0
