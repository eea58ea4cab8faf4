"""The trial-store interface every backend implements (SQLite here, MongoDB next).

Small on purpose: experiments; trials with create, reserve-with-lease, heartbeat, progress,
complete/fail/release with a fencing token, requeue of expired leases, cancel; queries, among
them the trials changed since a cursor (``changes``: what a controller reads each round instead
of the whole history); and a leased lock so that one controller at a time suggests for an
experiment. The contract tests in ``tests/test_store_contract.py`` run against every backend.

Every method is atomic on its own. A write that names a trial's attempt succeeds only while that
attempt still holds the trial (state ``running``, same attempt); otherwise it raises ``LeaseLost``
and changes nothing, so a worker whose lease was taken over can never overwrite a result.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localrules.store.documents import Experiment, HistoryEntry, Trial
from localrules.store.workers import WorkerFacts, WorkerRecord

if TYPE_CHECKING:
    from localrules.store.query.fields import Bound
    from localrules.store.query.plan import Order
    from localrules.store.query.run import Selection


class StoreError(RuntimeError):
    """A store operation that cannot be carried out (the message says why)."""


class StoreUnavailable(StoreError):
    """The database is away for now (unreachable, locked, timed out): worth retrying later,
    unlike a refusal or a malformed document."""


class LockLost(StoreError):
    """A fenced write was refused: its lock is no longer held by the fence's owner with the
    fence's generation (another process took the lock over)."""


@dataclass(frozen=True)
class LockState:
    """A named lock as the store holds it: its holder (``owner``, "" when released), when its
    lease ends, and its ``generation``: raised by one at every acquisition by a new holder,
    kept by renewals, never lowered. A holder's state is its fencing token: writes given it
    (``fence=``) are made only while the lock still has that owner and generation."""

    name: str
    owner: str
    expires: float
    generation: int

    def held_by(self, owner: str) -> bool:
        return self.owner == owner and bool(owner)


class LeaseLost(StoreError):
    """The trial is no longer held by this attempt (requeued, cancelled or finished)."""


class ExperimentNotFound(StoreError, ValueError):
    pass


class TrialNotFound(StoreError):
    """A write named a trial this store does not hold (not a database outage)."""


class TrialExists(StoreError, ValueError):
    pass


def check_cursor(after: object) -> int:
    """A ``changes`` cursor: 0 or a number a previous call returned."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"a changes cursor is 0 or a cursor changes() returned, got {after!r}")
    return after


class TrialStore(abc.ABC):
    """A database of experiments and trials. Backends are opened with ``open_store(url)``."""

    snapshot: bool = False
    """True when a reader sees a copy taken when it opened the store, not the store itself (a
    read-only SQLite store of an older schema, upgraded in memory): later writes never show."""

    url: str
    """The URL the store was opened with, with any password removed."""
    identity: str
    """A random id the database keeps (set when it is first opened): which store this is, so a
    worker's spool delivers only to the database its writes were meant for."""

    def __repr__(self) -> str:
        from localrules.store.urls import redact

        return f"{type(self).__name__}({redact(self.url)!r})"

    # --- experiments --------------------------------------------------------------------------
    @abc.abstractmethod
    def create_experiment(self, experiment: Experiment) -> Experiment:
        """Insert the experiment unless one with its name exists; return the stored one."""

    @abc.abstractmethod
    def get_experiment(self, name: str) -> Experiment | None: ...

    @abc.abstractmethod
    def list_experiments(self) -> list[Experiment]: ...

    def require_experiment(self, name: str) -> Experiment:
        """The experiment, or ExperimentNotFound (a ValueError: bad input) naming those there
        are."""
        from localrules.store.urls import redact

        found = self.get_experiment(name)
        if found is None:
            names = ", ".join(e.name for e in self.list_experiments()) or "none"
            raise ExperimentNotFound(f"no experiment {name!r} in {redact(self.url)}; "
                                     f"experiments: {names}")
        return found

    @abc.abstractmethod
    def update_settings(self, name: str, settings: Mapping[str, Any],
                        fence: LockState | None = None) -> Experiment:
        """Merge ``settings`` into the experiment's settings (e.g. a new max_trials); with
        ``fence``, only while that lock is held as it says (else ``LockLost``)."""

    # --- creating trials ----------------------------------------------------------------------
    @abc.abstractmethod
    def allocate_trial_ids(self, experiment: str, n: int) -> list[int]:
        """``n`` fresh, never-reused trial ids for the experiment (atomic counter)."""

    @abc.abstractmethod
    def add_trials(self, trials: Sequence[Trial], fence: LockState | None = None) -> None:
        """Insert trials as given (queued ones; a reference run reused from elsewhere arrives
        done); ``TrialExists`` if an (experiment, trial_id) is taken (then none of them is
        inserted). With ``fence``, only while that lock is held as it says (``LockLost``)."""

    # --- the worker's side --------------------------------------------------------------------
    @abc.abstractmethod
    def reserve(
        self, worker: str, lease_seconds: float, experiments: Sequence[str] | None = None
    ) -> Trial | None:
        """Atomically take the oldest queued trial (of ``experiments`` if given): state running,
        attempt + 1, lease until now + ``lease_seconds``. None when the queue is empty."""

    @abc.abstractmethod
    def heartbeat(self, experiment: str, trial_id: int, attempt: int,
                  lease_seconds: float) -> None:
        """Extend the lease to now + ``lease_seconds``."""

    @abc.abstractmethod
    def report_progress(self, experiment: str, trial_id: int, attempt: int,
                        progress: Mapping[str, Any]) -> None:
        """Replace the trial's progress document (epoch, metrics) and, in the same write, file
        it in the trial's curve under its epoch (``store.curve``: a re-run epoch overwrites its
        entry; only the epochs the curve keeps are filed)."""

    @abc.abstractmethod
    def complete(self, experiment: str, trial_id: int, attempt: int,
                 result: Mapping[str, Any]) -> None:
        """running → done with ``result``. Also accepted when the trial was requeued after its
        lease expired and nobody has reserved it since (same attempt): the work is valid and
        nobody else holds it (a result delivered late, e.g. from a spool after an outage)."""

    @abc.abstractmethod
    def fail(self, experiment: str, trial_id: int, attempt: int, error: str) -> None:
        """running → failed with ``error`` (accepted late as ``complete`` is)."""

    @abc.abstractmethod
    def release(self, experiment: str, trial_id: int, attempt: int) -> None:
        """running → queued (a worker hands its trial back, e.g. on preemption)."""

    # --- the controller's side ----------------------------------------------------------------
    @abc.abstractmethod
    def promote(self, experiment: str, trial_id: int, attempt: int,
                fidelity: Mapping[str, Any], fence: LockState | None = None) -> bool:
        """done → queued with the next rung (``fidelity``): a multi-fidelity search's
        promotion, the only transition out of ``done``. Made only while the trial is still
        done with this ``attempt`` (the one the decision read) at the rung below, so it happens
        at most once; it
        is no lapse and keeps the result (its rung results). With ``fence``, only while that
        lock is held as it says (``LockLost``). True if promoted."""

    # --- any process --------------------------------------------------------------------------
    @abc.abstractmethod
    def requeue_expired(self, max_attempts: int, now: float | None = None,
                        fence: LockState | None = None) -> list[Trial]:
        """Running trials whose lease has expired go back to queued, or to failed once they
        have had ``max_attempts`` attempts. Returns the trials as they are now. With ``fence``,
        only while that lock is held as it says (else ``LockLost``, nothing requeued). The
        record of the worker that held each (if it has one) gets a ``lease lost`` event and
        ``counts.lapsed`` + 1."""

    @abc.abstractmethod
    def cancel(self, experiment: str, trial_ids: Iterable[int] | None = None) -> int:
        """Queued or running trials (all of the experiment's, or those given) → cancelled."""

    # --- the workers record (store.workers) ---------------------------------------------------
    @abc.abstractmethod
    def record_worker(self, worker: str, status: str, trial: Mapping[str, Any] | None = None,
                      event: Mapping[str, Any] | None = None,
                      facts: WorkerFacts | None = None) -> None:
        """Create or update the worker's record in one atomic write: ``last_seen`` now, its
        ``status`` and the ``trial`` it holds (``workers.held_trial``; None: none), its
        ``facts`` when given (written when it starts), and ``event`` (``workers.worker_event``)
        appended, the latest ``workers.MAX_EVENTS`` kept, and counted. ValueError for an
        unknown status or event."""

    @abc.abstractmethod
    def workers(self) -> list[WorkerRecord]:
        """Every worker's record, most recently seen first (malformed ones skipped with a
        warning). A read-only store from before workers were recorded has none: []."""

    @abc.abstractmethod
    def get_trial(self, experiment: str, trial_id: int) -> Trial | None: ...

    @abc.abstractmethod
    def trials(self, experiment: str, states: Iterable[str] | None = None) -> list[Trial]:
        """The experiment's trials (of the given states), by trial id."""

    def history(self, experiment: str) -> list[HistoryEntry]:
        """Id, state, hyperopt misc and result of every trial, by id (a projection: configs,
        most of a document, are not read)."""
        return self.changes(experiment, 0)[0]

    @abc.abstractmethod
    def changes(self, experiment: str, after: int) -> tuple[list[HistoryEntry], int]:
        """The history entries (by id) of the experiment's trials written since the cursor
        ``after``, and the cursor to pass next time. ``after=0`` gives every trial (those written
        before stores numbered their changes included). A reader that keeps what it read and
        passes each returned cursor back sees every later write at least once; an entry may come
        again unchanged, and it is always the trial as it is now.

        Every write to a trial stamps it with the next number of a counter kept in the store
        (never a host's clock: workers' clocks differ), and the cursor returned is the counter
        as the read found it (never 0). The danger is a write that took number n, was overtaken
        by one that took n + 1, and lands after a reader's cursor passed n + 1. SQLite takes
        the number inside the write's transaction, and transactions are serialised, so a
        snapshot holding the counter at n holds every write numbered up to n. MongoDB needs
        two operations, so a write changes the trial and marks it as being written in one,
        then takes its number and stamps it, and this query returns marked trials whatever
        their number (``store/mongo.py`` gives the argument)."""

    @abc.abstractmethod
    def reference_runs(self, key: str) -> list[Trial]:
        """Every trial, in any experiment, that is a reference run with this key (the same
        rule, budget, seed and code version): how a reference is reused, never trained
        twice."""

    @abc.abstractmethod
    def counts(self, experiment: str) -> dict[str, int]:
        """Number of trials per state (every state present, zeros included)."""

    # --- the controller lock ------------------------------------------------------------------
    @abc.abstractmethod
    def take_lock(self, name: str, owner: str, lease_seconds: float,
                  replacing: str | None = None, now: float | None = None) -> LockState:
        """Atomically take or renew the named lock for ``owner`` and return the lock as it is
        after: ours (``held_by(owner)``) unless someone else holds an unexpired lease on it.
        A renewal (``owner`` holds it, even past its lease, nobody having taken it since)
        keeps the generation; any other acquisition raises it by one. ``replacing`` names a
        holder the caller has found dead (``store.holder``): the lock is taken from it at
        once, unexpired, if it is still the holder. ``now`` (tests) replaces the clock."""

    def acquire_lock(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Take or renew the named lock for ``owner``; False while someone else holds it."""
        return self.take_lock(name, owner, lease_seconds).held_by(owner)

    @abc.abstractmethod
    def lock_state(self, name: str) -> LockState | None:
        """The named lock as stored (None if never taken)."""

    @abc.abstractmethod
    def release_lock(self, name: str, owner: str) -> None:
        """Give the lock up if ``owner`` holds it (its generation is kept)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries (store/query) -----------------------------------------------------------------
    @abc.abstractmethod
    def query_kinds(self, experiments: Sequence[str], fields: Sequence[str]
                    ) -> dict[str, frozenset[str]]:
        """For each ``params.NAME``/``result.NAME`` field, the kinds of value (``bool``,
        ``number``, ``string``) the experiments' trials hold in it; a field no trial holds is
        left out (one read of the database; a filter's fields are typed by it)."""

    @abc.abstractmethod
    def query_fields(self, experiments: Sequence[str]) -> list[str]:
        """Every ``params.NAME``/``result.NAME`` field the experiments' trials hold (read only
        to list the valid fields in an error)."""

    @abc.abstractmethod
    def query_trials(self, experiment: str, where: Bound, order: Order | None = None,
                     limit: int | None = None, offset: int = 0) -> list[Trial]:
        """The experiment's trials for which the bound filter ``where`` holds (made concrete
        for the experiment: ``plan.for_experiment``), filtered by the database, sorted by
        ``order`` (else by trial id; ties by trial id), the first ``offset`` skipped, at most
        ``limit``."""

    @abc.abstractmethod
    def query_count(self, experiment: str, where: Bound) -> int:
        """How many of the experiment's trials ``where`` (as in ``query_trials``) selects,
        counted by the database (how a deep page skips whole groups of a sort)."""

    def select(self, experiments: str | Sequence[str], where: str | None = None,
               sort: str | None = None, reverse: bool = False, limit: int | None = None,
               columns: Sequence[str] | None = None, offset: int = 0) -> Selection:
        """The trials (documents) a query selects, with each experiment's references: what
        ``query`` makes a frame of, and the CLI prints (``store.query.run.select``).
        ``offset`` skips that many of them first (a page of a table)."""
        from localrules.store.query.run import select

        return select(self, experiments, where, sort, reverse, limit, columns, offset)

    def query(self, experiments: str | Sequence[str], where: str | None = None,
              columns: Sequence[str] | None = None, sort: str | None = None,
              reverse: bool = False, limit: int | None = None):
        """Trials of one or more experiments as a pandas DataFrame, filtered by the database.

        ``where`` is a filter in the query language (``store/query/language.py``, docs/query.md:
        ``"params.noise == true and result.top1 >= 0.9"``); ``columns`` the frame columns to
        keep (default: all); ``sort`` a field (scores best first; ``reverse`` flips) and
        ``limit`` a count, both applied by the database. One row per trial: ``experiment``,
        ``trial_id``, ``state``, ..., ``params.<name>`` and ``result.<key>`` columns (missing
        where a parameter was inactive), ``gap_closed`` (from the experiment's references),
        the multi-fidelity columns (``store.frame``), timestamps as UTC datetimes, and each
        column its values' dtype (nullable ``boolean``/``Int64``/``string``; ``float64``).
        Bad input (an unknown experiment, field or column, a filter that is not in the
        language) raises ValueError naming what is wrong and what is valid."""
        from localrules.store.frame import trial_row, typed_frame

        chosen = self.select(experiments, where, sort, reverse, limit, columns)
        rows = [trial_row(t, chosen.references[t.experiment]) for t in chosen.trials]
        return typed_frame(rows, chosen.columns)
