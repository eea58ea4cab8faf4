"""The dashboard's JSON API on both stores: what each page reads, paging and filters, bad input,
the token and host checks, and that reading never writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import STORE_BACKENDS, mongodb_url
from dashboard_fill import HOSTILE, LINK, epoch_record, fill, fill_hostile

pytest.importorskip("starlette", reason="the dashboard extra installs starlette")

from starlette.testclient import TestClient

from localrules.dashboard.app import create_app
from localrules.dashboard.views import DashboardData
from localrules.store import open_store
from localrules.store.documents import progress_document

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def shared_url(request, tmp_path_factory):
    """One filled store per backend for the tests that only read (filling takes seconds on
    SecantusDB); tests that write fill their own (``filled_url``)."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("dash") / "store.db")
    else:
        import uuid

        url = mongodb_url(request.getfixturevalue("mongodb_server_uri"),
                          f"lrdash_{uuid.uuid4().hex[:10]}")
    ids = fill(url)
    fill_hostile(url)
    yield url, ids
    if url.startswith("mongodb"):
        import pymongo

        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        client.drop_database(client.get_default_database().name)
        client.close()


@pytest.fixture
def filled_url(store_url):
    ids = fill(store_url)
    fill_hostile(store_url)
    return store_url, ids


def client_of(url: str, ids: dict, store):
    client = TestClient(create_app(DashboardData(store, url, analysis_age=0)),
                        base_url=LOCAL)
    client.ids, client.url = ids, url
    return client


@pytest.fixture
def client(shared_url):
    url, ids = shared_url
    with open_store(url, read_only=True) as store:
        yield client_of(url, ids, store)


@pytest.fixture
def own_client(filled_url):
    url, ids = filled_url
    with open_store(url, read_only=True) as store:
        yield client_of(url, ids, store)


def get(client, path: str, status: int = 200) -> dict:
    response = client.get(path)
    assert response.status_code == status, response.text
    return response.json()


def test_the_experiments_page_sums_each_experiment_up(client):
    data = get(client, "/api/experiments")
    by_name = {e["name"]: e for e in data["experiments"]}
    assert set(by_name) == {"dash", "hostile"}
    dash = by_name["dash"]
    assert dash["counts"] == {"queued": 3, "running": 2, "done": 21, "failed": 1, "cancelled": 0}
    assert dash["space"] == "wm-ad" and dash["engine"] == "store"
    assert dash["best_objective"] == pytest.approx(0.61)
    assert dash["reference_objectives"] == {"bp": 0.9, "fa": 0.5}
    assert dash["best_gap_closed"] == pytest.approx((0.61 - 0.5) / 0.4)
    assert dash["trials_per_hour"] == 24  # 21 done, 1 failed, 2 references: all just now
    assert dash["budget"]["dataset"] == "digits"


def test_trial_pages_cover_every_trial_once_newest_first(client):
    seen, page = [], 1
    while True:
        data = get(client, f"/api/experiments/dash/trials?per_page=7&page={page}")
        assert data["total"] == 29
        seen += [row["trial_id"] for row in data["rows"]]
        if not data["more"]:
            break
        page += 1
    assert page == 5 and seen == sorted(seen, reverse=True) and len(set(seen)) == 29


def test_filters_by_state_and_by_the_query_language(client):
    running = get(client, "/api/experiments/dash/trials?state=running")
    assert running["total"] == 2 and {r["state"] for r in running["rows"]} == {"running"}
    assert running["rows"][-1]["progress.epoch"] == 2  # the one that reported epochs
    both = get(client, "/api/experiments/dash/trials?state=running&state=failed")
    assert both["total"] == 3
    noisy = get(client, "/api/experiments/dash/trials?where=params.noise%20%3D%3D%20true"
                        "&state=done")
    assert noisy["total"] is None  # a filter's total would need every match read
    assert noisy["rows"] and all(r["params.noise"] is True and r["state"] == "done"
                                 for r in noisy["rows"])
    assert "noise" in noisy["params"]


def test_sorting_puts_the_best_first_and_reverse_flips_it(client):
    best = get(client, "/api/experiments/dash/trials?sort=objective&where=not%20is_reference")
    objectives = [r["result.objective"] for r in best["rows"] if r.get("result.objective")]
    assert objectives == sorted(objectives, reverse=True) and objectives[0] == pytest.approx(0.61)
    worst = get(client, "/api/experiments/dash/trials?sort=objective&reverse=1"
                        "&where=full_budget%20and%20not%20is_reference")
    assert worst["rows"][0]["result.objective"] == pytest.approx(0.4)
    assert get(client, "/api/experiments/dash/trials?sort=trial_id&reverse=0"
                       )["rows"][0]["trial_id"] == 0


@pytest.mark.parametrize(("query", "message"), [
    ("state=bogus", "unknown state 'bogus'; valid: queued"),
    ("where=params.noise%20%3D%3D", "filter at position 16: expected a value"),
    ("where=params.nope%20%3D%3D%201", "params.nope"),
    ("sort=colour", "colour"),
    ("per_page=0", "per_page: a whole number from 1 to 500"),
    ("per_page=501", "per_page: a whole number from 1 to 500"),
    ("page=x", "page: a whole number"),
    ("reverse=maybe", "reverse: 1/true/yes"),
    ("limit=3", "unknown parameter(s) limit; valid:"),
    ("page=1&page=2", "page: give it once"),
])
def test_bad_table_queries_are_400_naming_what_is_valid(client, query, message):
    error = get(client, f"/api/experiments/dash/trials?{query}", 400)["error"]
    assert message in error


def test_unknown_experiments_trials_and_addresses_are_404(client):
    assert "no experiment 'nope'" in get(client, "/api/experiments/nope", 404)["error"]
    assert "no experiment" in get(client, "/api/experiments/nope/trials", 404)["error"]
    assert "no trial 999" in get(client, "/api/experiments/dash/trials/999", 404)["error"]
    assert "no such address" in get(client, "/api/nothing", 404)["error"]
    assert get(client, "/api/experiments/dash/top?n=0", 400)["error"].startswith("n: ")


def test_one_trial_has_its_progress_params_config_and_gap(client):
    running = get(client, f"/api/experiments/dash/trials/{client.ids['running']}")
    assert running["state"] == "running" and running["progress"]["epoch"] == 2
    assert running["lease_expires"] > running["now"] and running["worker"]
    assert running["config"]["dataset"] == "digits" and running["params"]
    done = get(client, f"/api/experiments/dash/trials/{client.ids['done']}")
    assert done["gap_closed"] == pytest.approx((done["result"]["objective"] - 0.5) / 0.4)
    failed = get(client, f"/api/experiments/dash/trials/{client.ids['failed']}")
    assert HOSTILE in failed["error"] and failed["gap_closed"] is None


def test_one_trial_has_its_curve_and_attempts(client):
    running = get(client, f"/api/experiments/dash/trials/{client.ids['running']}")
    assert [p["epoch"] for p in running["curve"]] == [1, 2]
    second = running["curve"][1]
    assert second["metrics"]["top1"] == pytest.approx(0.5) and second["attempt"] == 1
    assert second["layers"]["conv1"] == {"weight_angle_deg": 60.0, "norm_ratio": 1.0}
    (attempt,) = running["attempts"]
    assert attempt["outcome"] == "running" and attempt["worker"] == "w0"
    failed = get(client, f"/api/experiments/dash/trials/{client.ids['failed']}")
    assert failed["attempts"][-1]["outcome"] == "failed" and failed["curve"] == []
    assert HOSTILE in failed["attempts"][-1]["error"]


def test_the_workers_page_has_each_workers_lease_and_events(client):
    data = get(client, "/api/workers")
    by_name = {w["worker"]: w for w in data["workers"]}
    assert set(by_name) == {"w0", "w1", "w-old"}
    w0 = by_name["w0"]
    assert w0["status"] == "training" and w0["host"] == "host-a"
    assert w0["trial"]["trial_id"] == client.ids["running"]
    assert w0["trial"]["lease_expires"] > data["now"] - 120
    assert w0["counts"]["released"] == 1
    assert [e["kind"] for e in w0["events"]] == ["started", "released", "reserved"]
    assert by_name["w1"]["events"][-1]["kind"] == "lease lost"
    assert by_name["w-old"]["status"] == "stopped"
    assert [w["last_seen"] for w in data["workers"]] == sorted(
        (w["last_seen"] for w in data["workers"]), reverse=True)


def test_progress_importance_and_top_trials(client):
    progress = get(client, "/api/experiments/dash/progress")
    assert len(progress["trials"]) == 27  # every search trial, queued ones too
    assert progress["trials"][-1]["best_so_far"] == pytest.approx(0.61)
    importance = get(client, "/api/experiments/dash/importance")
    first = importance["parameters"][0]
    assert importance["analysed"] == 21 and first["parameter"] == "noise"
    assert first["importance"] == pytest.approx(0.2, abs=0.01) and first["importance_se"] > 0
    assert all(level["sem"] is not None for level in first["levels"])
    top = get(client, "/api/experiments/dash/top?n=5")["trials"]
    assert len(top) == 5 and top[0]["objective"] == pytest.approx(0.61)
    assert [t["objective"] for t in top] == sorted((t["objective"] for t in top), reverse=True)
    plain = get(client, "/api/experiments/hostile/importance")  # a space with no choice
    assert plain["parameters"] == [] and plain["analysed"] == 3


def test_the_analyses_follow_the_counts(own_client):
    client = own_client
    before = get(client, "/api/experiments/dash/importance")["analysed"]
    with open_store(client.url) as writer:
        trial = writer.reserve("w-late", 60, ["dash"])
        writer.complete("dash", trial.trial_id, trial.attempt,
                        {"objective": 0.5, "diverged": False, "epochs": 3})
    assert get(client, "/api/experiments/dash/importance")["analysed"] == before + 1
    assert get(client, "/api/experiments/dash")["summary"]["counts"]["queued"] == 2


def test_the_version_moves_with_outcomes_not_with_progress(own_client):
    client = own_client
    version = get(client, "/api/experiments/dash")["version"]
    running = client.ids["running"]
    with open_store(client.url) as writer:
        trial = writer.get_trial("dash", running)
        writer.report_progress("dash", running, trial.attempt,
                               progress_document(epoch_record(3), 3, None))
        assert get(client, "/api/experiments/dash")["version"] == version
        writer.complete("dash", running, trial.attempt,
                        {"objective": 0.99, "diverged": False, "epochs": 3})
    head = get(client, "/api/experiments/dash")
    assert head["version"] > version and head["summary"]["best_trial"] == running
    assert get(client, "/api/experiments/dash/progress")["version"] == head["version"]


def test_user_input_is_returned_as_data(client):
    rows = get(client, "/api/experiments/hostile/trials")["rows"]
    assert rows[0][f"params.{HOSTILE}"] == HOSTILE  # JSON-encoded; the page sets textContent
    top = get(client, "/api/experiments/hostile/top")["trials"]
    assert len(top) == 3 and all(LINK in t["params"] for t in top)


def test_odd_addresses_and_pages_are_clear_errors(client):
    assert "no trial" in get(client, f"/api/experiments/dash/trials/{2**70}", 404)["error"]
    assert "per_page: a whole number" in get(
        client, "/api/experiments/dash/trials?per_page=%C2%B2", 400)["error"]  # a superscript 2
    assert get(client, "/api/experiments/dash/trials?page=9", 400)["error"] == \
        "page 9 is past the last page (the last is 1)"
    assert "past the last page" in get(
        client, "/api/experiments/dash/trials?page=9&where=params.noise", 400)["error"]


def test_pages_are_one_shell_and_every_answer_carries_the_security_headers(client):
    for path in ("/", "/workers", "/experiments/dash", "/experiments/dash/trials/3"):
        response = client.get(path)
        assert response.status_code == 200 and "dashboard.js" in response.text
    response = client.get("/api/experiments")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    plotly = client.get("/static/plotly.min.js")  # bundled in the plotly package: no CDN
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000


def test_a_page_never_shows_the_database_password(shared_url):
    url, _ = shared_url
    shown = "mongodb://reader:s3cret-Pass@db.example:27017/lr?authSource=admin"
    with open_store(url, read_only=True) as store:
        client = TestClient(create_app(DashboardData(store, shown)), base_url=LOCAL)
        for path in ("/api/meta", "/api/experiments", "/api/experiments/dash"):
            text = client.get(path).text
            assert "s3cret-Pass" not in text and "reader:***@db.example" in text


def test_requests_to_other_host_names_are_refused_on_loopback(client):
    response = client.get("/api/experiments", headers={"host": "attacker.example:8080"})
    assert response.status_code == 421
    assert client.get("/api/experiments", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/api/experiments", headers={"host": "[::1]:8080"}).status_code == 200


def test_with_a_token_every_request_needs_it_and_the_url_token_becomes_a_cookie(shared_url):
    url, _ = shared_url
    token = "t0ken-for-the-test-only"
    with open_store(url, read_only=True) as store:
        app = create_app(DashboardData(store, url), token=token, loopback_only=False)
        client = TestClient(app, base_url="http://dashboard.example:8080")
        refused = client.get("/api/experiments")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert client.get("/", follow_redirects=False).status_code == 401
        assert client.get("/api/experiments", headers={"authorization": "Bearer wrong"}
                          ).status_code == 401
        bearer = {"authorization": f"Bearer {token}"}
        assert client.get("/api/experiments", headers=bearer).status_code == 200
        exchange = client.get(f"/experiments/dash?token={token}&state=done",
                              follow_redirects=False)
        assert exchange.status_code == 303
        assert exchange.headers["location"] == "/experiments/dash?state=done"
        cookie = exchange.headers["set-cookie"]
        assert cookie.startswith("localrules_dashboard_8080=")  # one cookie per port
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert client.get("/api/experiments").status_code == 200  # the cookie now
        elsewhere = client.get(f"/%2F%2Fevil.example?token={token}", follow_redirects=False)
        assert elsewhere.headers["location"] == "/evil.example"  # never //evil.example
        assert refused.headers["x-frame-options"] == "DENY"  # refusals carry the headers too


def test_reading_writes_nothing(client):
    """Every endpoint read, and the database is as it was: same SQLite bytes; on MongoDB the
    same collections, indexes and documents."""
    url, ids = client.url, client.ids
    before = _fingerprint(url)
    for path in ("/api/experiments", "/api/experiments/dash", "/api/experiments/dash/trials",
                 "/api/experiments/dash/progress", "/api/experiments/dash/importance",
                 "/api/experiments/dash/top", f"/api/experiments/dash/trials/{ids['running']}",
                 "/api/experiments/hostile/trials?where=params.plain%20%3E%200"):
        client.get(path)
    assert _fingerprint(url) == before


def _fingerprint(url: str):
    if url.startswith("sqlite:"):
        from localrules.store.urls import sqlite_path

        return hashlib.sha256(Path(sqlite_path(url)).read_bytes()).hexdigest()
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        db = client.get_default_database()
        return {name: (sorted(db[name].index_information()),
                       sorted(map(str, db[name].find({}, {"_id": 0}))))
                for name in sorted(db.list_collection_names())}
    finally:
        client.close()
