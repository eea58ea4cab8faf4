"""``localrules worker``: a worker daemon for a TPU VM, GPU box or CPU machine.

It reserves trials of the named experiments (or of any), trains each with the trainer (device
strategy from the environment: TPU, several GPUs, or the default), checkpoints every epoch to
``--artifacts`` (a local path or gs://), renews its lease from a heartbeat thread, and reports
progress and results. A trial requeued after a crash resumes from its checkpoint. While the
database is away, reservations are retried with backoff and final results wait in a local spool
until it returns. SIGTERM (the preemption notice) checkpoints the running trial, hands it back to
the queue and exits 0.
"""

from __future__ import annotations

import argparse
import logging

from localrules.cli.arguments import add_db_argument, number
from localrules.validation import DURATION, INTERVAL, TRIALS
from localrules.worker.spool import DEFAULT_SPOOL

log = logging.getLogger(__name__)
FLAGS = {"lease_seconds": "--lease", "poll_seconds": "--poll", "idle_exit": "--idle-exit"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run trials from a trial database until told to stop",
                       description=__doc__.split("\n\n")[0])
    add_db_argument(p)
    p.add_argument("--experiment", action="append", dest="experiments", metavar="NAME",
                   help="only trials of this experiment (repeatable; default: any)")
    p.add_argument("--max-trials", type=number(TRIALS), help="exit after this many trials")
    p.add_argument("--idle-exit", type=number(DURATION),
                   help="exit after this many seconds without a queued trial (default: never)")
    p.add_argument("--lease", type=number(INTERVAL),
                   default=60.0, help="lease in seconds (default 60)")
    p.add_argument("--artifacts", default="localrules-artifacts",
                   help="where trial checkpoints and histories go (local path or gs://)")
    p.add_argument("--poll", type=number(INTERVAL), default=5.0,
                   help="seconds between looks at an empty queue (default 5)")
    p.add_argument("--name", help="worker name in the database (default host:pid:random)")
    p.add_argument("--spool", default=DEFAULT_SPOOL,
                   help=f"local directory for results while the database is away "
                        f"(default {DEFAULT_SPOOL})")
    p.set_defaults(handler=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    from localrules.cli.tables import artifacts_location
    from localrules.store import open_store
    from localrules.store.documents import check_experiment_name
    from localrules.store.urls import redact
    from localrules.worker import Worker
    from localrules.worker.spool import Spool

    for name in args.experiments or ():
        check_experiment_name(name)
    artifacts = artifacts_location(args.artifacts)
    spool = Spool(args.spool)
    spool.check_writable()  # before the store: a worker that could not keep results is refused
    with open_store(args.db) as store:
        missing = [e for e in args.experiments or () if store.get_experiment(e) is None]
        if missing:  # workers may well start before the controller creates the experiment
            known = ", ".join(e.name for e in store.list_experiments()) or "none"
            log.warning("no experiment %s in %s yet (experiments: %s); waiting for its trials",
                        ", ".join(map(repr, missing)), redact(store.url), known)
        worker = Worker(store, artifacts, experiments=args.experiments, worker_id=args.name,
                        lease_seconds=args.lease, poll_seconds=args.poll,
                        idle_exit=args.idle_exit, max_trials=args.max_trials,
                        spool=spool)
        log.info("worker %s on %s (artifacts %s)", worker.worker_id, redact(store.url),
                 artifacts)
        stats = worker.run()
    log.info("worker %s: %d done, %d failed, %d handed back, %d abandoned", worker.worker_id,
             len(stats.completed), len(stats.failed), len(stats.released), len(stats.abandoned))
    return 0
