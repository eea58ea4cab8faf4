"""A stored search for the dashboard's tests: a real space and controller, references, and
trials in every state (``from dashboard_fill import fill``; pytest puts tests/ on the path)."""

from __future__ import annotations

from localrules.search.controller import Controller
from localrules.search.session import open_experiment
from localrules.search.settings import SearchSettings, TpeSettings
from localrules.spaces import default_budget, load_space
from localrules.store import Experiment, Trial, open_store
from localrules.store.documents import progress_document
from localrules.store.workers import WorkerFacts, held_trial, worker_event

HOSTILE = '<img src=x onerror="window.__pwned=1">'
"""A value a page must show as text, never run."""
LINK = '<a href="https://evil.example/">CLICK</a>'
"""Markup Plotly would draw as a link (it reads a subset of HTML in plot text)."""


def planted(params) -> float:
    """Input noise on is worth +0.2."""
    return 0.4 + 0.2 * params["noise"] + 0.01 * (params["batch_size"] == 16)


def epoch_record(epoch: int) -> dict:
    """A trainer's epoch record (train/epoch.py) with per-layer weight metrics."""
    return {"epoch": epoch, "step": 10 * epoch, "task_lr": 0.1 / epoch, "alignment_lr": 0.01,
            "loss": 2.0 / epoch, "top1": 0.3 + 0.1 * epoch, "eval_loss": 2.2 / epoch,
            "layers": {"conv1": {"weight_angle_deg": 80.0 - 10 * epoch, "norm_ratio": 1.0},
                       "fc": {"weight_angle_deg": 70.0 - 5 * epoch, "norm_ratio": 0.9}}}


def fill(url: str, name: str = "dash", n: int = 24, queued: int = 3) -> dict[str, int]:
    """``n`` TPE trials of wm-ad on ``url`` with bp/fa references: the first fails (its error
    holds ``HOSTILE``), the last two are running (one has reported two epochs), the rest are
    done with a planted objective, and ``queued`` more wait in the queue. Returns trial ids by
    role: ``failed``, ``running`` (with progress), ``done`` (one), ``queued`` (one)."""
    space = load_space("wm-ad", default_budget("digits"))
    settings = SearchSettings(max_trials=n + queued, concurrency=n + queued,
                              tpe=TpeSettings(n_startup_jobs=n + queued),
                              references=("bp", "fa"))
    ids: dict[str, int] = {}
    with open_store(url) as store:
        c = Controller(store, open_experiment(store, name, space, settings), space, settings)
        from localrules.search.references import new_reference_trials

        store.add_trials(new_reference_trials(store, name, space.budget, settings))
        while (ref := store.reserve("w-ref", 60)) is not None:
            store.complete(name, ref.trial_id, ref.attempt,
                           {"objective": {"bp": 0.9, "fa": 0.5}[ref.reference["rule"]],
                            "top1": 0.9, "diverged": False, "epochs": 3})
        c.step()
        for i in range(n):
            t = store.reserve(f"w{i % 2}", 60)
            if i == 0:
                store.fail(name, t.trial_id, t.attempt, f"out of memory {HOSTILE}")
                ids["failed"] = t.trial_id
            elif i < n - 2:
                store.complete(name, t.trial_id, t.attempt,
                               {"objective": planted(t.params), "top1": planted(t.params),
                                "diverged": False, "epochs": 3})
                ids["done"] = t.trial_id
            elif i == n - 2:
                for epoch in (1, 2):
                    store.report_progress(name, t.trial_id, t.attempt,
                                          progress_document(epoch_record(epoch), 3, None))
                ids["running"] = t.trial_id
        queued_trials = store.trials(name, ["queued"])
        if queued_trials:
            ids["queued"] = queued_trials[0].trial_id
        record_workers(store, name, ids)
    return ids


def record_workers(store, name: str, ids: dict[str, int]) -> None:
    """What the two workers would have recorded: w0 holds the running trial and handed one
    back, w1 is idle and lost a lease; a third stopped."""
    facts = WorkerFacts("host-a", 4242, 1.0, [name], "0.1.0")
    running = store.get_trial(name, ids["running"])
    store.record_worker("w0", "idle", facts=facts, event=worker_event("started"))
    store.record_worker("w0", "idle", event=worker_event(
        "released", name, ids["done"], 1, "SIGTERM: preemption notice"))
    store.record_worker("w0", "training", held_trial(name, running.trial_id, running.attempt,
                                                     running.lease_expires),
                        event=worker_event("reserved", name, running.trial_id,
                                           running.attempt))
    store.record_worker("w1", "idle", facts=WorkerFacts("host-b", 7, 1.0, None, "0.1.0"),
                        event=worker_event("lease lost", name, ids["failed"], 1,
                                           f"lease taken over {HOSTILE}"))
    store.record_worker("w-old", "stopped", facts=WorkerFacts("host-c", 9, 1.0, None, "0.1.0"),
                        event=worker_event("stopped"))


def fill_hostile(url: str, name: str = "hostile") -> None:
    """A plain experiment whose trials carry ``HOSTILE`` and ``LINK`` in params' names and
    values (params are user input: a YAML space names them): three done (so they reach the
    plots of the top trials) and one running."""
    with open_store(url) as store:
        store.create_experiment(Experiment(name, "test", {"paper": "wm"}, "f", {}))
        ids = store.allocate_trial_ids(name, 4)
        params = [{HOSTILE: HOSTILE, "plain": 1, LINK: LINK if i % 2 else "<b>bold</b>"}
                  for i in ids]
        store.add_trials([Trial(name, i, {}, p, {"idxs": {}, "vals": {}})
                          for i, p in zip(ids, params, strict=True)])
        while (trial := store.reserve("w-hostile", 60, [name])) is not None \
                and trial.trial_id != ids[-1]:
            store.complete(name, trial.trial_id, trial.attempt,
                           {"objective": 0.5 + trial.trial_id / 10, "diverged": False})
