"""Shared test set-up: quiet TensorFlow, a seeded NumPy generator, a trial store per backend."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property-based tests (marked ``fuzz``): a fixed, derandomized budget in every run of the suite,
# so CI is reproducible and bounded; ``--hypothesis-profile long`` for the long random runs.
settings.register_profile(
    "ci", max_examples=30, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "long", max_examples=2000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ci")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20200301)


# --- trial stores -------------------------------------------------------------------------------
# The store contract (tests/test_store_contract.py) runs once per backend named here. MongoDB runs
# against a real wire-protocol server: SecantusDB started once per session, or the server named
# by LOCALRULES_TEST_MONGODB_URI (a real mongod); each test gets a fresh database on it.
STORE_BACKENDS: tuple[str, ...] = ("sqlite", "mongodb")
MONGODB_ENV = "LOCALRULES_TEST_MONGODB_URI"


@pytest.fixture(scope="session")
def mongodb_server_uri():
    """The URI of a MongoDB server for the whole session (no database in it)."""
    import os

    if os.environ.get(MONGODB_ENV):
        yield os.environ[MONGODB_ENV]
        return
    from secantus import SecantusDBServer

    with SecantusDBServer(port=0, storage_path=":memory:") as server:
        yield server.uri


def mongodb_url(server_uri: str, database: str) -> str:
    """``server_uri`` with its database replaced (options kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_uri)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
def mongodb_database_url(request: pytest.FixtureRequest):
    """A fresh MongoDB database for one test, dropped afterwards."""
    import uuid

    import pymongo

    server = request.getfixturevalue("mongodb_server_uri")
    name = f"lrtest_{uuid.uuid4().hex[:12]}"
    yield mongodb_url(server, name)
    client = pymongo.MongoClient(server, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a fresh, empty store of each backend (tests that reopen it use this)."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "store.db")  # absolute: sqlite:////tmp/...
    if request.param == "mongodb":
        return request.getfixturevalue("mongodb_database_url")
    raise AssertionError(f"no store_url for backend {request.param!r}")


@pytest.fixture
def store(store_url: str):
    """A fresh, empty TrialStore of each backend, closed afterwards."""
    from localrules.store import open_store

    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def wait_for_epoch():
    """``wait_for_epoch(url, experiment, trial_id, epoch=1, timeout=240)``: block until the trial
    has reported ``epoch`` (the database may not exist yet); fail the test on timeout."""
    import time
    from pathlib import Path

    from localrules.store import open_store
    from localrules.store.urls import sqlite_path

    def wait(url: str, experiment: str, trial_id: int, epoch: int = 1,
             timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not url.startswith("sqlite:") or Path(sqlite_path(url)).exists():
                with open_store(url) as store:
                    trial = store.get_trial(experiment, trial_id)
                if trial is not None and (trial.progress or {}).get("epoch", 0) >= epoch:
                    return
            time.sleep(0.2)
        pytest.fail(f"trial {trial_id} of {experiment!r} did not reach epoch {epoch} in "
                    f"{timeout:.0f} s")

    return wait


@pytest.fixture
def sigterm_after_epoch(wait_for_epoch):
    """``sigterm_after_epoch(proc, url, experiment, trial_id=0, timeout=180)``: once the trial
    has reported an epoch, SIGTERM the process (a ``subprocess.Popen`` with piped stderr) and
    wait for it; returns its exit status and stderr. It is killed if it outlives the wait."""
    import signal

    def stop(proc, url: str, experiment: str, trial_id: int = 0,
             timeout: float = 180.0) -> tuple[int, str]:
        try:
            wait_for_epoch(url, experiment, trial_id)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
        return proc.returncode, err

    return stop


# --- headless browser ---------------------------------------------------------------------------
# HTML reports are rendered in Debian's Chromium (driven by Playwright). `.ci/run` installs it and
# sets LOCALRULES_REQUIRE_BROWSER=1, so a missing browser fails CI instead of skipping the check.
CHROMIUM = os.environ.get("LOCALRULES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium, driven by Playwright (a ``Browser``), for a module's tests."""
    if not os.environ.get("LOCALRULES_REQUIRE_BROWSER"):
        if not os.path.exists(CHROMIUM):
            pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.importorskip("playwright", reason="the dev extra installs playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def collect_errors(page) -> list[str]:
    """Every console error, page error and failed request of ``page``, as they come."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:80]}"))
    return errors


@pytest.fixture(scope="module")
def render_html(chromium):
    """``render(path) -> {"errors", "images", "tables", "text"}``: the page loaded from disk in
    headless Chromium, with every console error, page error and failed request collected, and
    each image's (loaded, natural width)."""

    def render(path) -> dict:
        page = chromium.new_page()
        errors = collect_errors(page)
        page.goto(f"file://{os.path.abspath(path)}", wait_until="load")
        out = {
            "errors": errors,
            "images": page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"),
            "tables": page.evaluate(
                "Array.from(document.querySelectorAll('table')).map("
                "t => t.querySelectorAll('tbody tr').length)"),
            "text": page.inner_text("body"),
        }
        page.close()
        return out

    return render
