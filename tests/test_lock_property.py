"""The controller lock under random interleavings: acquisitions, renewals, releases, expiries
and takeovers of dead holders by several owners, on a real SQLite store and (a smaller budget) a
real MongoDB wire-protocol server. The store must agree with a model of the lock at every step:
never two live owners holding unexpired leases at once, generations that only increase (by one
at each change of holder, unchanged by a renewal), and fenced writes accepted from the current
holder's generation only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localrules.store import Experiment, LockLost, LockState, open_store

OWNERS = ("A", "B", "C")
NAME = "controller:exp"
T0 = 1_000_000.0

OPS = st.lists(st.one_of(
    st.tuples(st.just("take"), st.sampled_from(OWNERS), st.sampled_from([0.5, 1.0, 3.0])),
    st.tuples(st.just("takeover"), st.sampled_from(OWNERS), st.sampled_from([0.5, 3.0])),
    st.tuples(st.just("release"), st.sampled_from(OWNERS), st.just(0.0)),
    st.tuples(st.just("advance"), st.just(""), st.sampled_from([0.25, 0.75, 2.0])),
    st.tuples(st.just("write"), st.sampled_from(OWNERS), st.just(0.0)),
), min_size=1, max_size=30)


@dataclass
class Model:
    now: float = T0
    holder: str = ""
    expires: float = 0.0
    generation: int = 0
    dead: set[str] = field(default_factory=set)
    beliefs: dict[str, LockState] = field(default_factory=dict)
    """What each live owner was last told it holds (its fence)."""

    def take(self, owner: str, lease: float, replacing: str | None) -> LockState:
        if self.holder != owner:
            free = not self.holder or self.expires <= self.now
            if not free and (replacing is None or replacing != self.holder):
                return LockState(NAME, self.holder, self.expires, self.generation)
            self.holder, self.generation = owner, self.generation + 1
        self.expires = self.now + lease
        return LockState(NAME, owner, self.expires, self.generation)


def run_ops(store, ops) -> None:
    store.create_experiment(Experiment("exp", "test", {"paper": "wm"}, "f", {}))
    model, top = Model(), 0
    for op, owner, arg in ops:
        if owner in model.dead:
            continue  # a dead holder does nothing more
        if op == "advance":
            model.now += arg
        elif op in ("take", "takeover"):
            replacing = model.holder if op == "takeover" and model.holder not in ("", owner) \
                else None
            expected = model.take(owner, arg, replacing)
            got = store.take_lock(NAME, owner, arg, replacing=replacing, now=model.now)
            assert (got.owner, got.generation) == (expected.owner, expected.generation)
            assert got.expires == pytest.approx(expected.expires)
            assert got.generation >= top  # generations never go down
            top = got.generation
            if got.held_by(owner):
                if replacing is not None:
                    model.dead.add(replacing)  # found dead: it will never act again
                    model.beliefs.pop(replacing, None)
                model.beliefs[owner] = got
        elif op == "release":
            store.release_lock(NAME, owner)
            model.beliefs.pop(owner, None)
            if model.holder == owner:
                model.holder, model.expires = "", 0.0
        elif op == "write" and owner in model.beliefs:
            fence = model.beliefs[owner]
            current = model.holder == owner and model.generation == fence.generation
            try:
                store.update_settings("exp", {"by": owner}, fence=fence)
                accepted = True
            except LockLost:
                accepted = False
            assert accepted == current, (owner, fence, model)
        # Never two live owners that each hold an unexpired lease, and at most one fence that
        # the store would accept.
        unexpired = [o for o, b in model.beliefs.items() if b.expires > model.now]
        assert len(unexpired) <= 1
        stale = [o for o, b in model.beliefs.items()
                 if model.holder != o or b.generation != model.generation]
        assert len(model.beliefs) - len(stale) <= 1
        state = store.lock_state(NAME)
        if state is not None:
            assert state.generation == model.generation
            assert (state.owner or "") == model.holder


@pytest.mark.fuzz
@given(ops=OPS)
def test_the_sqlite_lock_agrees_with_its_model(ops):
    with open_store("sqlite://") as store:
        run_ops(store, ops)


@pytest.mark.fuzz
@settings(max_examples=8)
@given(ops=OPS)
def test_the_mongodb_lock_agrees_with_its_model(mongodb_server_uri, ops):
    import pymongo
    from conftest import mongodb_url

    name = f"lrlock_{uuid.uuid4().hex[:10]}"
    try:
        with open_store(mongodb_url(mongodb_server_uri, name)) as store:
            run_ops(store, ops)
    finally:
        client = pymongo.MongoClient(mongodb_server_uri, serverSelectionTimeoutMS=5000)
        client.drop_database(name)
        client.close()
