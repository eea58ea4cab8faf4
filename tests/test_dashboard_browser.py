"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
server over a store with done, running, failed and queued trials: every page loads without a
console error and is saved as a screenshot for a person to look at; user input is shown as
text; a trial that finishes while the page is open appears without a reload; the filters and
paging work; a token given in the URL becomes a cookie."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import collect_errors
from dashboard_fill import HOSTILE, LINK, epoch_record, fill, fill_hostile

pytest.importorskip("uvicorn", reason="the dashboard extra installs uvicorn")

from localrules.dashboard.app import create_app
from localrules.dashboard.serve import bind
from localrules.dashboard.views import DashboardData
from localrules.store import open_store
from localrules.store.documents import progress_document

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(os.environ.get("LOCALRULES_SCREENSHOTS")
                   or Path(__file__).resolve().parents[1] / "build" / "screenshots")
"""Where the pages' screenshots go (``build/`` is ignored by git)."""
TOKEN = "browser-test-token-0123456789"


class Served:
    """A dashboard served by uvicorn in a thread, over its own read-only store."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import uvicorn

        self.store = open_store(url, read_only=True)
        app = create_app(DashboardData(self.store, url), token=token, refresh=0.5)
        self.sock = bind("127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    url = "sqlite:///" + str(tmp_path_factory.mktemp("dash") / "store.db")
    ids = fill(url)
    fill_hostile(url)
    with Served(url) as served:
        served.url, served.ids = url, ids
        yield served


@pytest.fixture
def page(chromium):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = collect_errors(page)
    yield page
    page.close()


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


def settle(page, selector: str) -> None:
    """Wait for the page's first render (``selector``) and for its plots to draw."""
    page.wait_for_selector(selector, timeout=20_000)
    page.wait_for_timeout(800)


def test_the_experiments_page(site, page):
    page.goto(site.base + "/")
    settle(page, "#experiments tbody tr")
    rows = page.locator("#experiments tbody tr")
    assert rows.count() == 2
    dash = page.locator('tr[data-experiment="dash"]').inner_text()
    assert "wm-ad" in dash and "0.61" in dash and "0.275" in dash  # best and its gap closed
    shoot(page, "experiments")
    assert page.errors == []


def test_the_experiment_page_with_its_plots(site, page):
    page.goto(site.base + "/experiments/dash")
    settle(page, "#trial-table tbody tr")
    for plot in ("plot-progress", "plot-epochs", "plot-importance", "plot-level-0",
                 "plot-slice-0"):
        assert page.locator(f"#{plot} .main-svg").count() >= 1, plot
    assert "Importance" in page.inner_text("#plot-importance")
    shoot(page, "experiment")
    assert page.errors == []


def test_the_trial_page_with_its_curves_and_attempts(site, page):
    page.goto(f"{site.base}/experiments/dash/trials/{site.ids['running']}")
    settle(page, "#trial-cards .card")
    text = page.inner_text("main")
    assert "running" in text and "2/3" in text and "lease expires" in text
    for plot in ("plot-accuracy", "plot-loss", "plot-rates", "plot-angle", "plot-ratio"):
        assert page.locator(f"#{plot} .main-svg").count() >= 1, plot
    assert "conv1" in page.inner_text("#plot-angle")
    assert page.locator("#attempt-table tbody tr").count() == 1
    shoot(page, "trial")
    page.goto(f"{site.base}/experiments/dash/trials/{site.ids['failed']}")
    settle(page, "#trial-cards .card")
    assert HOSTILE in page.inner_text("main")  # the error, as text
    assert page.evaluate("window.__pwned") is None
    shoot(page, "trial-failed")
    assert page.errors == []


def test_the_workers_page(site, page):
    page.goto(site.base + "/workers")
    settle(page, "#workers tbody tr")
    w0 = page.inner_text('tr[data-worker="w0"]')
    assert "training" in w0 and "host-a" in w0 and "in " in w0  # its lease expires in …
    events = page.inner_text("#events")
    assert "released" in events and "lease lost" in events and HOSTILE in events
    assert page.evaluate("window.__pwned") is None
    shoot(page, "workers")
    assert page.errors == []


def test_user_input_is_shown_as_text_never_run(site, page):
    page.goto(site.base + "/experiments/hostile")
    settle(page, "#trial-table tbody tr")
    assert HOSTILE in page.inner_text("#trial-table")
    assert page.locator("#trial-table img").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.wait_for_selector("#slices .main-svg")  # the plots of the top trials: text there too
    assert page.locator("svg a").count() == 0 and page.locator("svg b").count() == 0
    assert LINK in page.inner_text("#slices")
    shoot(page, "hostile")
    assert page.errors == []


def test_a_trial_finishing_appears_without_a_reload(site, page):
    page.goto(site.base + "/experiments/dash")
    settle(page, "#trial-table tbody tr")
    page.evaluate("window.__same_page = true")
    running = site.ids["running"]
    row = f'tr[data-trial="{running}"]'
    assert page.get_attribute(row, "data-state") == "running"
    with open_store(site.url) as writer:
        trial = writer.get_trial("dash", running)
        writer.report_progress("dash", running, trial.attempt,
                               progress_document(epoch_record(3), 3, None))
        writer.complete("dash", running, trial.attempt,
                        {"objective": 0.97, "top1": 0.97, "diverged": False, "epochs": 3})
    page.wait_for_selector(f'{row}[data-state="done"]', timeout=15_000)
    assert page.evaluate("window.__same_page") is True
    # the header follows, and the best so far is the new trial (selectors, not script: the
    # page's Content-Security-Policy forbids evaluating strings)
    page.wait_for_selector("#summary:has-text('0.97')", timeout=15_000)
    assert page.errors == []


def test_filters_and_paging(site, page):
    page.goto(site.base + "/experiments/dash?per_page=5")
    settle(page, "#trial-table tbody tr")
    first = page.locator("#trial-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")
    assert len(first) == 5 and page.is_disabled("#prev")
    assert "page 1 of 6 (29 trials)" in page.inner_text("#page-info")
    page.click("#next")
    page.wait_for_selector("#page-info:text-matches('^page 2 of')")
    second = page.locator("#trial-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")
    assert len(second) == 5 and not set(first) & set(second) and "page=2" in page.url
    page.check('input[name=state][value=done]')  # a state filter goes back to page 1
    page.wait_for_selector("#page-info:has-text('of 5 (')")
    states = page.locator("#trial-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.state)")
    assert states and set(states) == {"done"}
    page.fill("#where", "params.noise == true")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#page-info:text-is('page 1')")
    noisy = page.locator("#trial-table tbody tr").count()
    assert 0 < noisy <= 5
    page.fill("#where", "params.noise ==")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#table-error:has-text('expected a value')", timeout=10_000)
    shoot(page, "filter-error")
    page.fill("#where", "")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#trial-table tbody tr")
    page.click("#trial-table th:text-is('objective')")  # sort by clicking a column
    page.wait_for_url("**sort=objective**")
    page.wait_for_selector("#trial-table th.sorted:text-is('objective')")
    assert [e for e in page.errors if "400" not in e] == []  # the bad filter's own 400


def test_a_token_in_the_address_becomes_a_cookie(site, chromium):
    with Served(site.url, token=TOKEN) as guarded:
        context = chromium.new_context()
        page = context.new_page()
        refused = page.goto(guarded.base + "/")
        assert refused.status == 401
        page.goto(f"{guarded.base}/?token={TOKEN}")
        settle(page, "#experiments tbody tr")
        assert "token" not in page.url  # gone from the address bar and the history
        port = guarded.base.rsplit(":", 1)[1]
        cookie = {c["name"]: c for c in context.cookies()}[f"localrules_dashboard_{port}"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        context.close()
