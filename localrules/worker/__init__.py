"""Workers: reserve a trial, hold its lease, train it, report; here the local part (a loop and
worker processes beside a controller). TensorFlow is imported only when a trial trains."""

from localrules.worker.loop import Worker, WorkerStats

__all__ = ["Worker", "WorkerStats"]
