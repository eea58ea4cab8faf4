"""The dashboard under a large search: response times of its API at 10,000 trials.

A store holds one ``ia``-like experiment of ``--trials`` trials (``bench_query.make_trials``:
mostly done, some failed, running and queued), its space a YAML space over those parameters so
that importance has its choices. A real dashboard (uvicorn in a thread, the store opened
read-only) is asked, over HTTP, for what its pages read:

- ``trials_page``: the trial table's first page (100 trials, newest first) — the goal's figure;
- ``trials_filtered``: a page under a filter, sorted by objective (``params.noise == true``);
- ``trials_deep``: page 50 of 100 (the database returns the first 5,000 rows; the page slices);
- ``experiment_refresh``: what an open experiment page fetches every few seconds (its header and
  the table's page; the analyses are cached until a trial changes state);
- ``experiment_cold``: the first load of the experiment page (header, table, progress,
  importance and top trials, caches empty);
- ``experiments``: the experiments page.

The baseline, measured in the same run, is what a dashboard without the query layer would do on
every refresh: read every trial (``store.trials``). Each figure is the median of ``--repeats``
requests. Goal: ``trials_page`` ≤ 300 ms at 10,000 trials. ``--mongo-trials`` runs the same on
SecantusDB in this process (``--no-mongo`` leaves it out; it inserts slowly, so N is lower).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_query import CHUNK, make_trials, size_flags

log = logging.getLogger("bench_dashboard")

EXPERIMENT = "bench"
GOAL_SECONDS = 0.3
SPACE = """
name: bench-dashboard
base: ia-tpe
parameters:
  batch_size: {key: run.batch_size, choice: [16, 32, 64, 128]}
  alternate: {key: run.alternate, choice: [false, true]}
  decay: {key: rule.weights.decay, uniform: [0.0, 0.1]}
  noise:
    key: null
    choice:
      - value: false
      - value: true
        parameters:
          sigma: {key: rule.noise.stddev, loguniform: [1.0e-4, 1.0]}
"""


def fill(store, n: int) -> None:
    """The experiment, with its YAML space, and ``n`` trials."""
    from localrules.store import Experiment

    store.create_experiment(Experiment(
        name=EXPERIMENT, space_name="bench-dashboard",
        space_source={"yaml": SPACE, "name": "bench-dashboard"},
        fingerprint="sha256:" + "0" * 64, budget={"epochs": 30, "dataset": "digits"},
        settings={"seed": 0, "max_trials": n, "objective": "top1"}))
    trials = make_trials(EXPERIMENT, n, seed=0)
    for first in range(0, n, CHUNK):
        store.add_trials(trials[first:first + CHUNK])


class Server:
    """The dashboard over ``url``, served by uvicorn in a thread."""

    def __init__(self, url: str) -> None:
        import uvicorn

        from localrules.dashboard.app import create_app
        from localrules.dashboard.serve import bind
        from localrules.dashboard.views import DashboardData
        from localrules.store import open_store

        self.store = open_store(url, read_only=True)
        self.data = DashboardData(self.store, url)
        sock = bind("127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.data), log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=120) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.store.close()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def measure(url: str, trials: int, repeats: int) -> dict[str, Any]:
    server = Server(url)
    base = f"/api/experiments/{EXPERIMENT}"
    filtered = urllib.parse.urlencode({"where": "params.noise == true", "sort": "objective"})
    try:
        page = server.get(f"{base}/trials")
        assert page["total"] == trials and len(page["rows"]) == min(100, trials), page["total"]

        def cold() -> None:
            server.data._cache.clear()
            for path in ("", "/trials", "/progress", "/importance", "/top"):
                server.get(base + path)

        figures = {
            "trials_page_s": timed(lambda: server.get(f"{base}/trials"), repeats),
            "trials_filtered_s": timed(lambda: server.get(f"{base}/trials?{filtered}"), repeats),
            "trials_deep_s": timed(lambda: server.get(
                f"{base}/trials?page={max(1, min(50, trials // 100))}"), repeats),
            "experiment_refresh_s": timed(lambda: (server.get(base),
                                                   server.get(f"{base}/trials")), repeats),
            "experiment_cold_s": timed(cold, repeats),
            "experiments_s": timed(lambda: server.get("/api/experiments"), repeats),
            "read_every_trial_s": timed(lambda: server.store.trials(EXPERIMENT), repeats),
        }
        analysed = server.get(f"{base}/importance")["analysed"]
    finally:
        server.close()
    figures["speedup_page_vs_read_all"] = round(
        figures["read_every_trial_s"] / max(figures["trials_page_s"], 1e-9), 1)
    log.info("%s", figures)
    return {"trials": trials, "importance_analysed": analysed, **figures}


def run_sqlite(trials: int, repeats: int, folder: Path) -> dict[str, Any]:
    from localrules.store import open_store

    url = f"sqlite:///{folder / 'dashboard.db'}"
    with open_store(url) as store:
        fill(store, trials)
    return measure(url, trials, repeats)


def run_mongo(trials: int, repeats: int) -> dict[str, Any]:
    from secantus import SecantusDBServer

    from localrules.store import open_store

    with SecantusDBServer(port=0, storage_path=":memory:") as mongo:
        url = mongo.uri.rstrip("/") + "/bench_dashboard"
        with open_store(url) as store:
            fill(store, trials)
        return measure(url, trials, repeats)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    return size_flags(p, 10_000, 2_000, 7).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        out: dict[str, Any] = {"repeats": args.repeats,
                               "sqlite": run_sqlite(args.trials, args.repeats, Path(folder))}
    if not args.no_mongo:
        out["mongodb"] = run_mongo(args.mongo_trials, args.repeats)
    out["goal"] = {"trials": args.trials, "page_seconds_max": GOAL_SECONDS,
                   "met": args.trials >= 10_000 and out["sqlite"]["trials_page_s"]
                   <= GOAL_SECONDS}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
