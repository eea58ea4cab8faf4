"""Ray Tune's trials into the localrules store, in the store-queue engine's schema.

Runs in the Tune driver, the only process that needs the database (a cluster's nodes do not).
A trial is stored when Ray starts it: state ``running``, attempt 1, worker ``ray:<Ray trial
id>``, no lease (a store controller's lease sweep must not requeue it: Ray, not a store worker,
owns it). Each epoch's checkpoint, once Ray has persisted it, becomes the trial's progress (the
same document a worker writes, with that checkpoint as ``run_dir``); the end becomes
``complete`` (finished, or stopped early by Ray's scheduler) or ``fail`` (out of retries). A
retry Ray makes from a checkpoint is counted in the progress (``retries``). Results are the
default engine's ``results.TrialResult`` with its Ray fields set (``engine: "ray"``, the Ray
trial id) and the fields a store worker writes (``ray_result``): ``trial_epochs`` always, and
under a multi-fidelity search (the experiment's ``fidelity``, read once from the store) the
``rung`` reached, ``stopped_early`` and ``rungs``, the rung results the callback saw. Those it
keeps in the progress as each rung's epoch is checkpointed (``progress.rungs``), so a restarted
driver still has them.

A database that is briefly away must not stop Ray's trials: a write that fails is logged and
the next event writes the state again (progress is rewritten whole each epoch; a missing trial
document is inserted by whichever event comes first). Writes to a trial the store already holds
as finished are skipped, so a restored experiment never fights its own records. While the search
runs, the callback renews the experiment's controller lock (taken by the command before Tune
starts, released by it after), which keeps a second driver or a store-queue controller off the
experiment.

Pickled with the Tuner (for ``Tuner.restore``) without the database URL or the lock: the driver
hands both over in the process environment (``STORE_URL_ENV``, ``LOCK_ENV``), so no password
lands in the experiment's storage, and a resumed run uses the database and lock of the command
that resumed it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from localrules.raytune.searcher import META, driver_lock, store_url

if TYPE_CHECKING:
    from localrules.search.fidelity import Fidelity

log = logging.getLogger(__name__)

REFERENCE_OBJECTIVE = "reference_objective"
"""What a reference run reports instead of ``objective`` (ASHA ranks on the objective)."""
RAY_RETRIES = "retries"
RAY_RUNGS = "rungs"
"""The progress's rung results so far, as a result's ``rungs``."""
LOCK_RENEW_SECONDS = 10.0


def checkpoint_location(checkpoint) -> str | None:
    """Where a persisted Ray checkpoint is, as a path or a URI (None without one)."""
    if checkpoint is None:
        return None
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    if kind == "local":
        return checkpoint.path
    return f"{'gs' if kind == 'gcs' else kind}://{checkpoint.path}"


def rung_of(rungs: Sequence[int], epochs: int) -> int | None:
    """The index of the highest rung at or below ``epochs`` trained (None below the first)."""
    below = [k for k, at in enumerate(rungs) if at <= epochs]
    return below[-1] if below else None


def rung_results(seen: Sequence[Mapping[str, Any]] | None, rungs: Sequence[int],
                 last: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rung results ``seen`` so far with the epoch reported in ``last`` added when it is a
    rung's (a retry's repeat replaces the earlier one), by rung; each stamped, as a store
    worker's are, with when it was seen (``finished_at``: where the reports place its
    epochs)."""
    kept = {r["rung"]: dict(r) for r in seen or () if isinstance(r, Mapping)
            and isinstance(r.get("rung"), int)}
    epoch = int(last.get("epoch") or 0)
    if epoch in rungs and isinstance(last.get("objective"), (int, float)):
        rung = rungs.index(epoch)
        kept[rung] = {"rung": rung, "epochs": epoch, "objective": last["objective"],
                      "finished_at": time.time()}
    return [kept[k] for k in sorted(kept)]


def ray_result(trial, last: Mapping[str, Any], fidelity: Fidelity,
               seen: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The stored result of a Ray trial that ended with the report ``last``: a store worker's
    fields (``results.TrialResult``), the Ray ones, ``trial_epochs`` (epochs trained), and
    under a ``fidelity`` for a search trial the highest rung of ``fidelity.rungs`` at or below
    the epochs trained, ``stopped_early`` (below the trial's epochs, not diverged: stopped by
    Ray's scheduler) and ``rungs`` (those ``seen`` with this one; only what the callback saw,
    where a worker keeps every rung it paused at). A reference run reports its objective apart
    from the scheduler's metric and trains fully: ``trial_epochs`` only."""
    from localrules.results import TrialResult

    epoch = int(last.get("epoch") or 0)
    epochs = int(last.get("epochs") or 0)
    diverged = bool(last.get("diverged"))
    reference = trial.config[META].get("reference") is not None
    rung = stopped_early = found = None
    if fidelity.enabled and not reference and epochs:
        rungs = fidelity.rungs(epochs)
        rung, stopped_early = rung_of(rungs, epoch), not diverged and epoch < epochs
        found = rung_results(seen, rungs, last) or None
    return TrialResult(
        top1=last.get("top1"), top5=last.get("top5"), eval_loss=last.get("eval_loss"),
        diverged=diverged, interrupted=False, epochs=epoch, steps=last.get("steps"),
        objective=last.get(REFERENCE_OBJECTIVE if reference else "objective"),
        chance=last.get("chance"), seconds=last.get("time_total_s"),
        run_dir=checkpoint_location(trial.checkpoint),
        weight_angle_deg=last.get("weight_angle_deg") or {},  # bp: none, as a worker's
        engine="ray", ray_trial_id=trial.trial_id, trial_epochs=epoch, rung=rung,
        stopped_early=stopped_early, rungs=found,
    ).to_document()


def error_text(trial) -> str:
    """The trial's latest failure as Ray recorded it, its last line (the exception) first: the
    driver's copy of the error file (the one in storage is synced later), else Ray's reading."""
    path = trial.error_file
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace")
        text = text[text.rfind("Failure #"):].strip() if "Failure #" in text else text.strip()
    else:
        text = str(trial.get_error() or "no error recorded by Ray")
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{lines[-1] if lines else text}\n\n{text}"


class StoreCallback(Callback):
    """Writes every Ray trial of one experiment into the store; holds the experiment's lock."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self._store = None
        self._renewed = 0.0
        self._reconciled = False
        self._fidelity = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_renewed": 0.0, "_reconciled": False,
                "_fidelity": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_fidelity": None, **state})  # pickled before it had one

    @property
    def fidelity(self) -> Fidelity:
        """The experiment's fidelity as its search reads it (``SearchSettings``: a scheduler
        an older Ray search recorded is its fidelity), read from the store once."""
        if self._fidelity is None:
            from localrules.search.settings import SearchSettings

            stored = self.store.require_experiment(self.experiment)
            self._fidelity = SearchSettings.from_dict(stored.settings).fidelity
        return self._fidelity

    @property
    def store(self):
        if self._store is None:
            from localrules.store import open_store

            self._store = open_store(store_url(), create=False)
        return self._store

    @staticmethod
    def _id(trial) -> int:
        return int(trial.config[META]["trial_id"])

    def _write(self, what: str, trial, write) -> None:
        """One store write for a trial; a database error is logged, never raised into Ray."""
        from localrules.store import StoreError

        try:
            write()
        except StoreError as err:
            log.warning("trial %d (Ray %s): %s not recorded: %s", self._id(trial),
                        trial.trial_id, what, err)

    def _ensure(self, trial):
        """The trial's store document, inserted if missing; None if it is finished already."""
        from localrules.store import FINISHED, RUNNING, Trial
        from localrules.store.documents import now

        meta = trial.config[META]
        stored = self.store.get_trial(self.experiment, meta["trial_id"])
        if stored is None:
            stored = Trial(experiment=self.experiment, trial_id=meta["trial_id"],
                           config=meta["config"], params=meta["params"], misc=meta["misc"],
                           reference=meta.get("reference"), state=RUNNING, attempt=1,
                           worker=f"ray:{trial.trial_id}", started_at=now())
            self.store.add_trials([stored])
        return None if stored.state in FINISHED else stored

    def _progress(self, trial, stored, checkpoint) -> None:
        from ray.tune.result import AUTO_RESULT_KEYS

        from localrules.store.documents import progress_document

        result = dict(trial.last_result or {})
        record = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS}
        doc = progress_document(record, int(result.get("epochs") or 0),
                                checkpoint_location(checkpoint))
        before = stored.progress or {}
        retries = int(before.get(RAY_RETRIES, 0))
        if retries:
            doc[RAY_RETRIES] = retries
        epochs = int(result.get("epochs") or 0)
        if self.fidelity.enabled and self._reference_key(trial) is None and epochs:
            seen = rung_results(before.get(RAY_RUNGS), self.fidelity.rungs(epochs), result)
            if seen:
                doc[RAY_RUNGS] = seen
        self.store.report_progress(self.experiment, self._id(trial), 1, doc)

    # --- Tune's events --------------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:
            self._reconcile(trials)
        if time.monotonic() - self._renewed >= LOCK_RENEW_SECONDS:
            self._renew_lock(trials)

    @staticmethod
    def _reference_key(trial) -> str | None:
        reference = trial.config[META].get("reference")
        return None if reference is None else reference["key"]

    def _renew_lock(self, trials: list) -> None:
        """Renew the experiment's lock and the key locks of the reference runs Tune is
        training (``store.references.claim``: no other process trains them meanwhile)."""
        from localrules.store import StoreError
        from localrules.store.references import claim

        name, owner, seconds = driver_lock()
        try:
            held = self.store.acquire_lock(name, owner, seconds)
            for trial in trials:
                key = self._reference_key(trial)
                if key is not None and not trial.is_finished():
                    claim(self.store, key, owner, seconds)
        except StoreError as err:
            log.warning("experiment lock not renewed: %s", err)
            return
        self._renewed = time.monotonic()
        if not held:
            log.error("another controller took experiment %r's lock; its writes and this "
                      "driver's may now conflict", self.experiment)

    def _reconcile(self, trials: list) -> None:
        """Store trials a crashed driver left running that Ray does not know: failed."""
        from localrules.store import RUNNING, StoreError

        known = {t.trial_id for t in trials}
        try:
            for stored in self.store.trials(self.experiment, [RUNNING]):
                ray_id = (stored.worker or "").removeprefix("ray:")
                if stored.worker and stored.worker.startswith("ray:") and ray_id not in known:
                    self.store.fail(self.experiment, stored.trial_id, stored.attempt,
                                    f"Ray trial {ray_id} was lost: the driver stopped before "
                                    "Ray recorded it in the experiment's state")
            self._reconciled = True
        except StoreError as err:
            log.warning("stale Ray trials not checked yet: %s", err)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._write("its start", trial, lambda: self._ensure(trial))

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint,
                      **info: Any) -> None:
        def write() -> None:
            stored = self._ensure(trial)
            if stored is not None:
                self._progress(trial, stored, checkpoint)

        self._write("the epoch's progress", trial, write)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        def write() -> None:
            stored = self._ensure(trial)
            if stored is None:
                return
            progress = dict(stored.progress or {})
            progress[RAY_RETRIES] = int(progress.get(RAY_RETRIES, 0)) + 1
            log.warning("trial %d (Ray %s) failed; Ray retries it from its last checkpoint "
                        "(retry %d)", self._id(trial), trial.trial_id, progress[RAY_RETRIES])
            self.store.report_progress(self.experiment, self._id(trial), 1, progress)

        self._write("a retry", trial, write)

    def _release_reference(self, trial) -> None:
        from localrules.store.references import release

        key = self._reference_key(trial)
        if key is not None:
            self._write("its reference lock's release", trial,
                        lambda: release(self.store, key, driver_lock()[1]))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = dict(trial.last_result or {})

        def write() -> None:
            stored = self._ensure(trial)
            if stored is not None:
                result = ray_result(trial, last, self.fidelity,
                                    (stored.progress or {}).get(RAY_RUNGS))
                self.store.complete(self.experiment, self._id(trial), 1, result)

        self._write("its result", trial, write)
        self._release_reference(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = f"Ray trial {trial.trial_id} failed after its retries: {error_text(trial)}"

        def write() -> None:
            if self._ensure(trial) is not None:
                self.store.fail(self.experiment, self._id(trial), 1, text[:4000])

        self._write("its failure", trial, write)
        self._release_reference(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
