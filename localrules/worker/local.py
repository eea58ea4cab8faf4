"""Worker processes on this machine beside a controller (``localrules search --workers K``).

Each is a fresh interpreter (spawn), so TensorFlow state never leaks between them or into the
controller; the cores are split between them (TensorFlow's intra-op threads), since K processes
each using every core only fight over them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localrules.worker.spool import DEFAULT_SPOOL

log = logging.getLogger(__name__)
CONTEXT = multiprocessing.get_context("spawn")
"""Fresh interpreters: no TensorFlow state shared with the controller or between workers."""


@dataclass(frozen=True)
class LocalWorkerSpec:
    url: str
    artifacts: str
    experiments: tuple[str, ...]
    lease_seconds: float = 60.0
    threads: int = 1
    log_level: int = logging.INFO
    spool: str = DEFAULT_SPOOL


def worker_main(spec: LocalWorkerSpec, index: int, log_queue: Any = None) -> None:
    """Entry point of one local worker process. Its records at ``spec.log_level`` go into
    ``log_queue`` for the parent's handler (``logs.LogForwarder``: above the search's progress
    bar), else to its own stderr."""
    from localrules.logs import quiet_tensorflow, send_to

    # Ctrl-C reaches the whole process group; the controller turns it into SIGTERM for each
    # worker, which checkpoints its trial and hands it back. A KeyboardInterrupt here would not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_queue is not None:
        send_to(log_queue, spec.log_level, prefix=f"worker-{index} ")
    else:
        logging.basicConfig(level=spec.log_level, format=f"%(asctime)s worker-{index} "
                                                         f"%(levelname)s %(name)s: %(message)s")
    quiet_tensorflow(spec.log_level)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, spec.threads + 1))

    from localrules.store import open_store
    from localrules.worker.loop import Worker
    from localrules.worker.spool import Spool

    parent = os.getppid()
    with open_store(spec.url) as store:
        # Orphaned (the controller was killed): stop, handing a running trial back.
        Worker(store, spec.artifacts, experiments=spec.experiments,
               lease_seconds=spec.lease_seconds,
               should_stop=lambda: os.getppid() != parent, spool=Spool(spec.spool)).run()


def start_local_workers(spec: LocalWorkerSpec, count: int, log_queue: Any = None
                        ) -> list[multiprocessing.Process]:
    """``count`` worker processes (``worker_main``), their records sent to ``log_queue`` if
    given (a queue of ``logs.LogForwarder(CONTEXT)``)."""
    procs = [CONTEXT.Process(target=worker_main, args=(spec, i, log_queue),
                             name=f"localrules-worker-{i}", daemon=False)
             for i in range(count)]
    for p in procs:
        p.start()
    log.info("started %d local worker%s (%d TensorFlow thread%s each)", count,
             "" if count == 1 else "s", spec.threads, "" if spec.threads == 1 else "s")
    return procs


def stop_local_workers(procs: Sequence[multiprocessing.Process], timeout: float = 60.0) -> None:
    """SIGTERM each worker (a running trial checkpoints and goes back to the queue), then wait."""
    import time

    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.warning("worker %s did not stop in %.0f s; killing it", p.name, timeout)
            p.kill()
            p.join()


def threads_per_worker(count: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(count, 1))
