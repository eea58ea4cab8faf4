"""Ray Tune's trials into the localrules store, in the store-queue engine's schema.

Runs in the Tune driver, the only process that needs the database (a cluster's nodes do not).
A trial is stored when Ray starts it: state ``running``, attempt 1, worker ``ray:<Ray trial
id>``, no lease (a store controller's lease sweep must not requeue it: Ray, not a store worker,
owns it). Each reported epoch becomes the trial's progress (the same document a worker writes,
with the latest persisted checkpoint as ``run_dir``); the end becomes ``complete`` (finished or
stopped early by ASHA) or ``fail`` (out of retries). A retry Ray makes from a checkpoint is
counted in the progress (``retries``). Results carry the default engine's fields (objective,
top1, top5, eval_loss, diverged, epochs, chance, seconds, code_version, run_dir) plus
``engine: "ray"``, the Ray trial id and ``stopped_early``.

Pickled with the Tuner (for ``Tuner.restore``): the store is reopened from its URL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from localrules.raytune.searcher import META

log = logging.getLogger(__name__)

RESULT_KEYS = ("objective", "top1", "top5", "eval_loss", "chance")
RAY_RETRIES = "retries"


def checkpoint_location(checkpoint) -> str | None:
    """Where a persisted Ray checkpoint is, as a path or a URI (None without one)."""
    if checkpoint is None:
        return None
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    if kind == "local":
        return checkpoint.path
    return f"{'gs' if kind == 'gcs' else kind}://{checkpoint.path}"


def error_text(trial) -> str:
    """The trial's latest failure as Ray recorded it: the driver's copy of the error file (the
    one in storage is synced later), else Ray's own reading, else a note."""
    path = trial.error_file
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace")
        return text[text.rfind("Failure #"):].strip() if "Failure #" in text else text.strip()
    return str(trial.get_error() or "no error recorded by Ray")


class StoreCallback(Callback):
    """Writes every Ray trial of one experiment into the store at ``url``."""

    def __init__(self, url: str, experiment: str) -> None:
        self.url = url
        self.experiment = experiment
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    @property
    def store(self):
        if self._store is None:
            from localrules.store import open_store

            self._store = open_store(self.url, create=False)
        return self._store

    @staticmethod
    def _id(trial) -> int:
        return int(trial.config[META]["trial_id"])

    def _progress(self, trial, result: dict[str, Any], retries: int) -> dict[str, Any]:
        from ray.tune.result import AUTO_RESULT_KEYS

        from localrules.worker.trial_runner import progress_document

        record = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS}
        doc = progress_document(record, int(result.get("epochs") or 0),
                                checkpoint_location(trial.checkpoint))
        return {**doc, RAY_RETRIES: retries} if retries else doc

    # --- Tune's events --------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        from localrules.store import RUNNING, Trial
        from localrules.store.documents import now

        meta = trial.config[META]
        if self.store.get_trial(self.experiment, meta["trial_id"]) is not None:
            return  # a retry, or a trial of a restored experiment
        self.store.add_trials([Trial(
            experiment=self.experiment, trial_id=meta["trial_id"], config=meta["config"],
            params=meta["params"], misc=meta["misc"], state=RUNNING, attempt=1,
            worker=f"ray:{trial.trial_id}", started_at=now())])

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict,
                        **info: Any) -> None:
        stored = self.store.get_trial(self.experiment, self._id(trial))
        retries = int((stored.progress or {}).get(RAY_RETRIES, 0)) if stored else 0
        self.store.report_progress(self.experiment, self._id(trial), 1,
                                   self._progress(trial, result, retries))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        stored = self.store.get_trial(self.experiment, self._id(trial))
        progress = dict((stored.progress if stored else None) or {})
        progress[RAY_RETRIES] = int(progress.get(RAY_RETRIES, 0)) + 1
        log.warning("trial %d (Ray %s) failed; Ray retries it from its last checkpoint "
                    "(retry %d)", self._id(trial), trial.trial_id, progress[RAY_RETRIES])
        self.store.report_progress(self.experiment, self._id(trial), 1, progress)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        from localrules import __version__

        last = dict(trial.last_result or {})
        epochs = int(last.get("epochs") or 0)
        epoch = int(last.get("epoch") or 0)
        diverged = bool(last.get("diverged"))
        result = {k: last.get(k) for k in RESULT_KEYS}
        result.update(
            diverged=diverged, epochs=epoch, seconds=last.get("time_total_s"),
            code_version=__version__, run_dir=checkpoint_location(trial.checkpoint),
            engine="ray", ray_trial_id=trial.trial_id,
            stopped_early=not diverged and epoch < epochs)
        if result["objective"] is None:
            self.store.fail(self.experiment, self._id(trial), 1,
                            f"Ray trial {trial.trial_id} ended without reporting an epoch")
            return
        self.store.complete(self.experiment, self._id(trial), 1, result)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = f"Ray trial {trial.trial_id} failed after its retries: {error_text(trial)}"
        self.store.fail(self.experiment, self._id(trial), 1, text[-4000:])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
