"""The incremental TPE history: a controller that keeps hyperopt's Trials between rounds and reads
only the store's changes suggests exactly what one that reads and rebuilds the whole history
suggests, through completions, failures, cancellations, lease expiries, hand-backs and diverged
trials; and a round reads only what changed. Real stores (both backends), real hyperopt."""

from __future__ import annotations

import time

from localrules.search import Controller, SearchSettings, TpeSettings, open_search
from localrules.search.history import History, rebuild
from localrules.search.suggest import suggestion_seed
from localrules.spaces import default_budget, load_space
from localrules.store import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    HistoryEntry,
    open_store,
)

SETTINGS = SearchSettings(max_trials=26, concurrency=4, seed=11, references=(),
                          max_attempts=2, tpe=TpeSettings(n_startup_jobs=4))


def _controller(store, name: str, owner: str) -> Controller:
    return open_search(store, name, load_space("wm-ad", default_budget("digits")), SETTINGS,
                       owner=owner)


def _events(store, name: str, round_: int) -> None:
    """What workers do between two rounds, decided by trial id so that two experiments given
    the same trials see the same events: complete, fail, hand back, diverge, or hold the trial
    with a lease that has already run out (requeued, then failed, by the controller)."""
    for _ in range(3):
        trial = store.reserve("w", 60.0, [name])
        if trial is None:
            break
        i, attempt = trial.trial_id, trial.attempt
        kind = i % 7
        if kind == 1:
            store.fail(name, i, attempt, "worker crashed")
        elif kind == 2 and attempt == 1:
            store.release(name, i, attempt)
        elif kind == 3:
            store.complete(name, i, attempt, {"objective": 0.1, "top1": None, "diverged": True})
        elif kind == 4 and attempt == 1:
            store.heartbeat(name, i, attempt, 0.001)  # its lease runs out: the worker is gone
        else:
            store.complete(name, i, attempt, {"objective": (i * 37 % 11) / 11.0})
    if round_ % 3 == 2:  # someone cancels the newest queued trial
        queued = [t.trial_id for t in store.trials(name, [QUEUED])]
        if queued:
            store.cancel(name, [max(queued)])
    time.sleep(0.01)  # leases given 0.001 s have run out


def _canonical(trials) -> list[tuple]:
    """What tpe.suggest reads of a hyperopt Trials, in a comparable form."""
    return sorted((d["tid"], d["state"], d["result"].get("status"), d["result"].get("loss"),
                   sorted(d["misc"]["idxs"].items()), sorted(d["misc"]["vals"].items()))
                  for d in trials.trials)


def test_incremental_rounds_suggest_what_rebuilt_rounds_suggest(store_url):
    """Two experiments in one store get the same events: one controller kept all along
    (incremental), and a new controller every round (reads everything: the rebuilt history)."""
    from hyperopt import tpe

    with open_store(store_url) as store:
        kept = _controller(store, "kept", "kept")
        for round_ in range(40):
            for name in ("kept", "fresh"):
                if round_:
                    _events(store, name, round_)
            kept.history.update(store, "kept")
            stored = store.history("kept")
            rebuilt = rebuild(stored)
            assert _canonical(kept.history.trials) == _canonical(rebuilt), round_
            if len(rebuilt.trials) >= SETTINGS.tpe.n_startup_jobs:  # TPE proper, same draw
                tid, seed = 10_000 + round_, suggestion_seed(SETTINGS.seed, round_)
                mine = tpe.suggest([tid], kept.domain, kept.history.trials, seed, verbose=False)
                theirs = tpe.suggest([tid], kept.domain, rebuilt, seed, verbose=False)
                assert mine[0]["misc"]["vals"] == theirs[0]["misc"]["vals"], round_
            fresh = _controller(store, "fresh", "fresh")
            added = (kept.step(), fresh.step())
            assert added[0] == added[1], round_
            a, b = kept.status(), fresh.status()
            assert (a.counts, a.created, a.finished) == (b.counts, b.created, b.finished), round_
            assert (a.best is None) == (b.best is None)
            if a.best is not None:
                assert a.best.trial_id == b.best.trial_id
            if a.finished:
                break
        assert a.finished, "the search never finished"
        trials = {name: store.trials(name) for name in ("kept", "fresh")}
    assert [t.params for t in trials["kept"]] == [t.params for t in trials["fresh"]]
    assert [t.state for t in trials["kept"]] == [t.state for t in trials["fresh"]]
    states = {t.state for t in trials["kept"]}
    assert {DONE, FAILED, CANCELLED} <= states
    assert any(t.lapses for t in trials["kept"]), "no lease ran out"
    assert any(t.result and t.result.get("diverged") for t in trials["kept"])


def test_a_round_reads_only_what_changed(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        c = _controller(store, "e", "me")
        read: list[int] = []
        changes = store.changes

        def spy(experiment, after):
            entries, cursor = changes(experiment, after)
            read.append(len(entries))
            return entries, cursor

        store.changes = spy
        c.step()
        for _ in range(5):
            while (t := store.reserve("w", 60.0, ["e"])) is not None:
                store.complete("e", t.trial_id, t.attempt, {"objective": 0.5})
            c.step()
        assert store.counts("e")[DONE] == 20 and c.history.created == 24
        read.clear()
        t = store.reserve("w", 60.0, ["e"])
        store.complete("e", t.trial_id, t.attempt, {"objective": 0.9})
        assert c.step() == 1
        # the round read the completed trial (and its own 3 queued ones, numbered since its
        # last read), not the 24 the experiment holds
        assert read == [4]
        assert c.status().best.trial_id == t.trial_id


def _entry(tid: int, state: str, objective: float | None = None, **misc) -> HistoryEntry:
    return HistoryEntry(tid, state, {"idxs": {"x": [tid]}, "vals": {"x": [0.5]}, **misc},
                        None if objective is None else {"objective": objective})


def test_history_follows_every_change_of_a_trial():
    h = History()
    h.apply([_entry(0, QUEUED, warm_start="ws"), _entry(1, QUEUED)])
    assert h.trials.tids == [0, 1] and h.pending == 2 and h.created == 2
    assert h.warm_starts == {"ws"}
    h.apply([_entry(0, DONE, 0.3), _entry(1, RUNNING)])
    assert [d["result"].get("loss") for d in h.trials.trials] == [-0.3, None]
    assert h.best().trial_id == 0
    h.apply([_entry(1, FAILED)])  # out of TPE's history, still counted in max_trials
    assert h.trials.tids == [0] and h.created == 2 and h.counts[FAILED] == 1
    h.apply([_entry(1, QUEUED)])  # back (as a promotion would bring a trial back)
    assert h.trials.tids == [0, 1] and h.pending == 1
    h.apply([_entry(1, CANCELLED)])
    assert h.trials.tids == [0] and h.created == 1
    h.apply([_entry(2, DONE, 0.3), _entry(3, DONE, 0.7)])
    assert h.best().trial_id == 3
    h.apply([_entry(3, QUEUED)])  # the best went away: found again among the rest
    assert h.best().trial_id == 0  # the lowest id among equals, as best_objective picks
    assert _canonical(h.trials) == _canonical(rebuild(h.values()))


def test_local_entries_never_replace_what_the_store_has_shown():
    h = History()
    h.apply([_entry(0, DONE, 0.5)])
    h.apply([_entry(0, RUNNING), _entry(1, RUNNING)], local=True)
    assert h.entries[0].state == DONE and h.entries[1].state == RUNNING
    assert h.shown(0) and not h.shown(1)
    h.apply([_entry(1, DONE, 0.1)])
    h.apply([_entry(1, RUNNING)], local=True)
    assert h.entries[1].state == DONE and h.pending == 0


def test_reference_runs_and_unusable_trials_stay_out_of_tpe():
    h = History()
    h.apply([HistoryEntry(0, DONE, {}, {"objective": 0.99},
                          {"rule": "bp", "replicate": 0, "key": "k"}),
             HistoryEntry(1, QUEUED, {"idxs": "tampered"}, None),
             _entry(2, DONE), _entry(3, DONE, 0.2)])
    assert h.trials.tids == [3] and [r.trial_id for r in h.references()] == [0]
    assert h.best().trial_id == 3 and h.created == 3 and h.counts[DONE] == 3
