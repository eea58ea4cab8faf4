"""Shared test set-up: quiet TensorFlow, a seeded NumPy generator, a trial store per backend."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20200301)


# --- trial stores -------------------------------------------------------------------------------
# The store contract (tests/test_store_contract.py) runs once per backend named here. A backend
# joins with one more name and one more branch in ``store_url``; issue 5 adds "mongodb" (a session
# fixture that starts SecantusDB, or LOCALRULES_TEST_MONGODB_URI, and a fresh database per test).
STORE_BACKENDS: tuple[str, ...] = ("sqlite",)


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a fresh, empty store of each backend (tests that reopen it use this)."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "store.db")  # absolute: sqlite:////tmp/...
    raise AssertionError(f"no store_url for backend {request.param!r}")


@pytest.fixture
def store(store_url: str):
    """A fresh, empty TrialStore of each backend, closed afterwards."""
    from localrules.store import open_store

    with open_store(store_url) as opened:
        yield opened

