"""Build (or restore) and run the Ray Tune search of one experiment.

The Tuner: ``ConcurrencyLimiter(StoreSearcher(...))`` at the experiment's concurrency — the
store engine's own trial factory (reference runs, warm starts, then TPE with every setting of the
experiment, seeded per trial id), so both engines suggest the same trials from the same history;
the function trainable with the requested resources per trial; a
``FailureConfig`` retrying a failed trial from its last checkpoint; under a multi-fidelity
search (``SearchSettings.fidelity``, the store engine's vocabulary) Ray's
``AsyncHyperBandScheduler`` on the objective with the same rungs (``ray_scheduler``); the store
callback. The experiment's files (Ray's experiment state and every trial's checkpoints)
live in ``storage/<experiment>``; running the same experiment again restores the Tuner from there
(``Tuner.restore``): finished trials stay finished, unfinished ones resume from their
checkpoints, and the searcher continues from its saved state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localrules.raytune import METRIC, MODE, require_ray
from localrules.search.engine import (
    INTERRUPTED,
    TERMINATED,
    Engine,
    SearchOutcome,
    StatusCallback,
    StopCheck,
    on_sigterm,
)
from localrules.search.fidelity import SCHEDULERS, Fidelity
from localrules.validation import Limit, ParameterError, shown

if TYPE_CHECKING:
    from localrules.search.session import SearchSession

log = logging.getLogger(__name__)

RESOURCE_AMOUNT = Limit(0, 1e6, low_open=True)
"""CPUs, GPUs or a custom resource per trial."""
MAX_FAILURES = Limit(0, 1000, integer=True)


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        if not sep or not name.strip():
            raise ParameterError("resources", f"{part!r} is not NAME=AMOUNT (e.g. cpu=2,gpu=1 "
                                              "or TPU=4)")
        pairs.append((name.strip(), amount))
    return pairs


def check_resources(resources: str | Mapping[str, Any]) -> dict[str, float]:
    """Resources per trial — the flag's ``cpu=2,gpu=1`` / ``TPU=4`` or a recorded mapping — as
    Ray's dict: ``cpu`` and ``gpu`` in any case, anything else a custom resource (case kept),
    each a finite amount > 0. ValueError naming what is wrong."""
    pairs = _pairs(resources) if isinstance(resources, str) else list(resources.items())
    out: dict[str, float] = {}
    for name, amount in pairs:
        if not isinstance(name, str):
            raise ParameterError("resources", f"resource names are strings, got {shown(name)}")
        try:
            value = RESOURCE_AMOUNT.parse(name, amount) if isinstance(amount, str) \
                else RESOURCE_AMOUNT.check(name, amount)
        except ValueError as err:
            raise ParameterError("resources", str(err)) from None
        key = name.lower() if name.lower() in ("cpu", "gpu") else name
        if key in out:
            raise ParameterError("resources", f"{key} given twice")
        out[key] = value
    if not out:
        raise ParameterError("resources", "none given; e.g. cpu=2,gpu=1 or TPU=4")
    return out


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray: where, with what per trial, how many retries. ``resources`` and
    ``max_failures`` are recorded with the experiment (``SearchSettings.ray``) and fixed on
    resume; ``storage`` and ``address`` may move. ``scheduler`` is the alias of the search's
    fidelity (``search.fidelity.SCHEDULERS``), None when not given: the search settings read it
    as their fidelity and do not keep it (an experiment that recorded one gives it back here on
    resume, and it is read the same way again)."""

    storage: str
    """Absolute path or URI (gs://…) holding the experiment's Ray state and checkpoints; on a
    cluster, storage every node reaches."""
    address: str | None = None
    """``auto`` or ``HOST:PORT`` of a running cluster; None starts a local Ray instance."""
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    max_failures: int = 2
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; valid: "
                             f"{', '.join(SCHEDULERS)}")
        try:
            MAX_FAILURES.check("{}", self.max_failures)
        except ValueError as err:
            raise ParameterError("max_failures", str(err)) from None
        if self.address is not None and self.address.startswith("ray://"):
            raise ParameterError("address", "ray://… (Ray Client) would run the search's "
                                            "driver on the head node, away from this machine's "
                                            "database and files; run the search on the cluster "
                                            "(ray job submit) with address auto")
        object.__setattr__(self, "resources", check_resources(self.resources))

    def settings(self) -> dict[str, Any]:
        """What the experiment records (``SearchSettings.ray``)."""
        recorded = {"resources": dict(self.resources), "max_failures": self.max_failures}
        return recorded if self.scheduler is None else {**recorded, "scheduler": self.scheduler}


def ray_verbosity(level: int) -> dict[str, Any]:
    """What Ray prints at a localrules log level: below INFO nothing of its own but warnings
    (no status tables, no per-trial configuration and result tables, no workers' output, whose
    TensorFlow lines the command's filter cannot reach: they come through Ray's log monitor);
    at INFO Tune's status tables; at DEBUG its per-trial tables and the workers' output too.
    ``tune_verbose`` is ``RunConfig(verbose=)``; the others are ``ray.init``'s."""
    return {"tune_verbose": 0 if level > logging.INFO else 1 if level > logging.DEBUG else 2,
            "log_to_driver": level <= logging.DEBUG,
            "logging_level": max(level, logging.DEBUG)}


@contextlib.contextmanager
def ray_session(options: RayOptions, log_level: int = logging.INFO) -> Iterator[None]:
    """Ray connected (or a local instance started and, at the end, stopped), with the cluster
    checked to offer every resource a trial asks for; as talkative as ``ray_verbosity`` says.
    ValueError when it cannot be reached or lacks a resource (a trial would wait for ever)."""
    require_ray()
    import ray

    started = not ray.is_initialized()
    if started:
        chosen = ray_verbosity(log_level)
        try:
            ray.init(address=options.address, include_dashboard=False,
                     log_to_driver=chosen["log_to_driver"],
                     logging_level=chosen["logging_level"])
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0]
            if options.address is None:
                raise ValueError(f"cannot start a local Ray instance: {first}") from None
            raise ParameterError("address", f"cannot reach Ray at {options.address}: "
                                            f"{first}") from None
    try:
        offered = ray.cluster_resources()
        names = {"cpu": "CPU", "gpu": "GPU"}
        short = {k: v for k, v in options.resources.items()
                 if offered.get(names.get(k, k), 0.0) < v}
        if short:
            have = ", ".join(f"{k}={v:g}" for k, v in sorted(offered.items())
                             if not k.startswith(("node:", "memory", "object_store")))
            wanted = ", ".join(f"{k}={v:g}" for k, v in short.items())
            raise ParameterError("resources", f"the Ray cluster cannot give a trial {wanted}; "
                                              f"it has {have} (resource names are "
                                              "case-sensitive: TPU, not tpu)")
        yield
    finally:
        if started:
            ray.shutdown()


def ray_trial_dirname(trial) -> str:
    """A Ray trial's directory named as a worker's, by the store's trial id."""
    from localrules.raytune.searcher import META
    from localrules.runs import trial_dirname

    return trial_dirname(int(trial.config[META]["trial_id"]))


def trial_epochs(space) -> int:
    """The epochs every trial of the space trains (its fixed keys may override the budget)."""
    return int(space.base.get("run.epochs", space.budget.epochs))


def ray_scheduler(fidelity: Fidelity, epochs: int):
    """Ray's scheduler for a search's fidelity under trials of ``epochs`` epochs: None without
    one, else ``AsyncHyperBandScheduler`` on the objective with time in epochs (one report an
    epoch), ``max_t`` the trial's epochs, grace period ``min_epochs``, reduction factor η and
    ``Fidelity.bracket_count`` brackets (ASHA: 1, which is Ray's ``ASHAScheduler``). Its
    bracket ``s`` has milestones at ``min_epochs · η^k`` from ``k = s``, below ``max_t``: the
    store engine's rungs of bracket ``s`` (``Fidelity.rungs``). What differs is Ray's: it
    assigns brackets at random in proportion to e^(rungs) rather than Hyperband's shares, it
    stops a trial below the rung's (1 - 1/η) quantile when it arrives there (never to be
    resumed), and its rung state lives in the driver (afresh after a restore)."""
    if not fidelity.enabled:
        return None
    from ray.tune.schedulers import AsyncHyperBandScheduler

    fidelity.check_budget(epochs)  # Ray would assert
    return AsyncHyperBandScheduler(
        time_attr="training_iteration", metric=METRIC, mode=MODE, max_t=epochs,
        grace_period=fidelity.min_epochs, reduction_factor=fidelity.reduction_factor,
        brackets=fidelity.bracket_count(epochs))


def _new_tuner(trainable, experiment, space, settings, options: RayOptions,
               verbose: int = 1):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from localrules.raytune.callback import StoreCallback
    from localrules.raytune.searcher import StoreSearcher

    searcher = ConcurrencyLimiter(
        StoreSearcher(experiment=experiment.name, space_source=experiment.space_source,
                      budget=experiment.budget, settings=settings.to_dict()),
        max_concurrent=settings.concurrency)
    scheduler = ray_scheduler(settings.fidelity, trial_epochs(space))
    return tune.Tuner(
        trainable,
        # Until the searcher says it is finished (max_trials search trials and the references
        # not reused from elsewhere): how many Tune gets is not known in advance.
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                    trial_name_creator=ray_trial_dirname,
                                    trial_dirname_creator=ray_trial_dirname),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=options.storage,
            callbacks=[StoreCallback(experiment.name)],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=verbose),
    )


@contextlib.contextmanager
def _driver_environment(url: str, lock: tuple[str, str, float], quiet: bool = False
                        ) -> Iterator[None]:
    """The database URL and the experiment lock in this process's environment while Tune runs,
    for the searcher and the callback (see searcher.py); restored afterwards. ``quiet``: Tune's
    older output, which at ``verbose=0`` prints nothing (the newer one prints its experiment's
    configuration and where its files are at any verbosity)."""
    import json

    from localrules.raytune.searcher import LOCK_ENV, STORE_URL_ENV

    # A reference run reports ``reference_objective``, not the metric ASHA ranks on, so ASHA
    # never stops one; Tune would otherwise refuse a result without the scheduler's metric.
    values = {STORE_URL_ENV: url, LOCK_ENV: json.dumps(list(lock)),
              "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
              **({"RAY_AIR_NEW_OUTPUT": "0"} if quiet else {})}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_ray_search(url: str, experiment, space, settings, options: RayOptions,
                   lock: tuple[str, str, float],
                   trainable: Callable[[dict[str, Any]], None] | None = None,
                   verbose: int = 1):
    """Run the experiment's search on Ray (new or restored; inside ``ray_session``) and return
    Ray's ResultGrid. ``lock`` is the experiment's controller lock (name, owner, seconds), held
    by the caller and renewed by the store callback while Tune runs. ``trainable`` replaces the
    localrules trainable (tests inject failures with it). ``verbose``: Tune's, for a new run (a
    restored one keeps its first run's)."""
    from ray import tune

    from localrules.raytune.trainable import train_ray_trial
    from localrules.store import open_store

    path = f"{options.storage.rstrip('/')}/{experiment.name}"
    runnable = tune.with_resources(trainable or train_ray_trial, dict(options.resources))
    with _driver_environment(url, lock, quiet=verbose == 0):
        if tune.Tuner.can_restore(path):
            log.info("restoring the Ray experiment in %s (a fidelity's rungs, if any, start "
                     "afresh: Ray keeps them in the driver)", path)
            tuner = tune.Tuner.restore(path, trainable=runnable, resume_unfinished=True,
                                       resume_errored=False)
        else:
            with open_store(url, read_only=True) as store:
                stored = len(store.history(experiment.name))
            if stored:
                raise ParameterError(
                    "storage", f"experiment {experiment.name!r} has {stored} trial(s) in the "
                               f"store but no Ray experiment in {path}; give the storage it "
                               "ran with, or choose a new experiment name")
            tuner = _new_tuner(runnable, experiment, space, settings, options, verbose)
        return tuner.fit()


@contextlib.contextmanager
def _every(seconds: float, action: Callable[[], bool | None], name: str) -> Iterator[None]:
    """While inside: ``action()`` every ``seconds`` from a thread, until it returns True."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(seconds):
            if action():
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def _interrupt_when(should_stop: StopCheck | None, every: float = 0.5) -> Iterator[None]:
    """While Tune runs in this (main) thread: once ``should_stop()``, interrupt it as Ctrl-C
    would (SIGINT to this process, which Tune turns into a saved, resumable stop)."""
    if should_stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt() -> bool:
        if should_stop():
            os.kill(os.getpid(), signal.SIGINT)
            return True
        return False

    with _every(every, interrupt, "localrules-ray-stop"):
        yield


@contextlib.contextmanager
def _report_while(session: SearchSession, on_status: StatusCallback | None,
                  every: float = 2.0) -> Iterator[None]:
    """While Tune runs: ``on_status`` (the command's progress bar and per-trial lines) every
    ``every`` seconds from a thread. The session's controller and store are idle meanwhile
    (the searcher and the callback open their own) and the stores are thread-safe."""
    if on_status is None:
        yield
        return

    def report() -> None:
        from localrules.store import StoreError

        try:
            on_status(session.controller.status())
        except StoreError as err:  # the next one may well succeed; Tune's run goes on
            log.debug("status not read: %s", err)

    with _every(every, report, "localrules-ray-status"):
        yield


@dataclass
class RayEngine(Engine):
    """Ray Tune runs the trials (``run_ray_search``). Entering it connects to Ray (or starts a
    local instance) and checks the cluster offers a trial's resources, before anything of the
    experiment is written. ``trainable`` replaces the localrules trainable (tests inject
    failures with it)."""

    options: RayOptions
    trainable: Callable[[dict[str, Any]], None] | None = None
    log_level: int = logging.INFO
    """How much of Ray's own output shows (``ray_verbosity``)."""

    name = "ray"

    @classmethod
    def resolve(cls, storage: str, address: str | None = None,
                given: Mapping[str, Any] | None = None,
                recorded: Mapping[str, Any] | None = None,
                trainable: Callable[[dict[str, Any]], None] | None = None,
                log_level: int = logging.INFO) -> RayEngine:
        """The options ``given`` (None: not given), else those the experiment ``recorded`` (on
        resume), else the defaults. ParameterError naming a bad one."""
        chosen = {**dict(recorded or {}),
                  **{k: v for k, v in dict(given or {}).items() if v is not None}}
        return cls(RayOptions(storage=storage, address=address, **chosen), trainable,
                   log_level)

    @classmethod
    def for_experiment(cls, url: str, name: str, storage: str, address: str | None = None,
                       given: Mapping[str, Any] | None = None,
                       log_level: int = logging.INFO) -> RayEngine:
        """``resolve`` with what experiment ``name`` recorded, if it exists (read only), after
        checking Ray is installed."""
        from localrules.search.session import read_experiment

        require_ray()
        stored = read_experiment(url, name)
        return cls.resolve(storage, address, given,
                           None if stored is None else stored.settings.get("ray"),
                           log_level=log_level)

    def __enter__(self) -> RayEngine:
        self._connected = ray_session(self.options, self.log_level)
        self._connected.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._connected.__exit__(*exc)

    def recorded(self) -> Mapping[str, Any]:
        return {"engine": self.name, "ray": self.options.settings()}

    def run(self, session: SearchSession, on_status: StatusCallback | None = None,
            should_stop: StopCheck | None = None) -> SearchOutcome:
        """Tune's run (new or restored) until every trial finished, else ``INTERRUPTED``
        (Ctrl-C or ``should_stop``) or ``TERMINATED`` (SIGTERM, turned into Tune's own graceful
        stop): running the search again restores it, its trials from their checkpoints."""
        terminated = threading.Event()

        def terminate() -> None:
            terminated.set()
            os.kill(os.getpid(), signal.SIGINT)

        try:
            with on_sigterm(terminate), _interrupt_when(should_stop), \
                    _report_while(session, on_status):
                run_ray_search(session.url, session.experiment, session.space,
                               session.settings, self.options, lock=session.controller.lock,
                               trainable=self.trainable,
                               verbose=ray_verbosity(self.log_level)["tune_verbose"])
        except KeyboardInterrupt:  # outside Tune's fit, which turns its own into a stop
            log.info("the Ray search was interrupted before Tune ran")
        status = session.controller.status()
        if on_status is not None:
            on_status(status)
        trials = session.trials()
        if status.finished:
            stopped = sum(bool((t.result or {}).get("stopped_early")) for t in trials)
            return SearchOutcome(status, None, trials, note=f"Ray; {stopped} stopped early")
        return SearchOutcome(status, TERMINATED if terminated.is_set() else INTERRUPTED, trials,
                             note="Ray keeps the running trials' checkpoints")
