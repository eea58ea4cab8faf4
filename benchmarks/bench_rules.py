"""Every learning-rule preset on digits at the default budget, and the README's search.

The small-scale science of the project in one run, through the commands a user runs with their
defaults:

- ``localrules train --preset P --seed S --out DIR`` for every preset and seeds 0..N-1 (no other
  flag: digits, the default budget). Per preset: top-1 mean ± SEM over the seeds, the mean over
  layers of the final B–W angle and of ‖B‖/‖W‖ (none for bp, which has no B of its own), and the
  median wall seconds per run (the whole command: start-up, TensorFlow import, tracing, training,
  validation).
- ``localrules train --preset bp --batch-size B --out DIR`` at every batch-size choice of the
  budget (the learning rate moves linearly with B): bp must learn at each.
- ``localrules search --space ia --experiment ia-digits`` (the README's main job, no other flag)
  in a fresh directory: its wall time, best objective, the best trial's gap closed and the
  references it trained.

Goals (issue 14, 2 cores): bp ≥ 0.97 in ≤ 120 s; fa ≤ 0.85 (reported, never tuned toward); sa ≥
0.92 and ia-tpe ≥ 0.95 as means over 3 seeds; bp ≥ 0.95 at every batch choice; the README search
≤ 600 s with its best ≥ 0.95. ``--parts`` runs some of it (presets, batches, search).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_rules")

CLI = [sys.executable, "-m", "localrules.cli.main"]
PARTS = ("presets", "batches", "search")
GOALS = {"bp_top1": 0.97, "bp_seconds": 120.0, "fa_top1_max": 0.85, "sa_top1": 0.92,
         "ia-tpe_top1": 0.95, "bp_by_batch_top1": 0.95, "search_seconds": 600.0,
         "search_best": 0.95}


def run(cmd: list[str], cwd: str) -> tuple[str, float]:
    """stdout and wall seconds of a command; SystemExit with its stderr when it fails."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def mean_sem(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    sem = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), sem


def train_preset(preset: str, seed: int, tmp: str, *flags: str) -> dict[str, Any]:
    out = Path(tmp, f"{preset}-seed{seed}{''.join(flags)}")
    stdout, seconds = run([*CLI, "train", "--preset", preset, "--seed", str(seed), "--out",
                           str(out), "--no-progress", *flags], tmp)
    result = json.loads(stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()
               if line.strip()]
    layers = records[-1].get("layers") or {}
    angles = [m["weight_angle_deg"] for m in layers.values()]
    ratios = [m["norm_ratio"] for m in layers.values()]
    return {"top1": result["top1"], "seconds": seconds,
            "angle": statistics.fmean(angles) if angles else None,
            "norm_ratio": statistics.fmean(ratios) if ratios else None}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    top1, sem = mean_sem([r["top1"] for r in runs])
    angles = [r["angle"] for r in runs if r["angle"] is not None]
    ratios = [r["norm_ratio"] for r in runs if r["norm_ratio"] is not None]
    return {"top1": _round(top1), "top1_sem": _round(sem),
            "top1_runs": [_round(r["top1"]) for r in runs],
            "angle_deg": _round(statistics.fmean(angles), 2) if angles else None,
            "norm_ratio": _round(statistics.fmean(ratios), 3) if ratios else None,
            "seconds": _round(statistics.median(r["seconds"] for r in runs), 1)}


def readme_search(tmp: str) -> dict[str, Any]:
    """The README's main job, as written, in a fresh working directory."""
    from localrules.store import open_store
    from localrules.store.references import references_of, search_trials

    folder = Path(tmp, "readme-search")
    folder.mkdir()
    _, seconds = run([*CLI, "search", "--space", "ia", "--experiment", "ia-digits"], str(folder))
    with open_store(f"sqlite:///{folder}/localrules.db", create=False) as store:
        experiment = store.require_experiment("ia-digits")
        trials = store.trials("ia-digits")
    references = references_of(trials, experiment.settings["references"])
    scored = [t for t in search_trials(trials) if t.objective is not None]
    best = max(scored, key=lambda t: t.objective)
    warm = [t.objective for t in scored if (t.misc or {}).get("warm_start")]
    return {"search_seconds": _round(seconds, 1), "search_trials": len(scored),
            "search_best": _round(best.objective),
            "search_best_gap_closed": _round(references.gap_closed(best.objective), 3),
            "search_best_is_warm_start": bool((best.misc or {}).get("warm_start")),
            "search_warm_start": _round(warm[0]) if warm else None,
            "search_references": {r: _round(level.objective)
                                  for r, level in references.levels.items()}}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> None:
    from localrules.rules import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(PRESETS),
                   help="comma-separated presets (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per preset (0..N-1)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"what to run, comma-separated (default: {','.join(PARTS)})")
    args = p.parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not parts or parts - set(PARTS):
        raise SystemExit(f"--parts takes some of {', '.join(PARTS)}, got {args.parts!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; valid: {', '.join(PRESETS)}")
    out: dict[str, Any] = {"dataset": "digits", "budget": "default", "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets if "presets" in parts else ():
            runs = []
            for seed in range(args.seeds):
                runs.append(train_preset(preset, seed, tmp))
                log.info("%s seed %d: top-1 %.4f in %.0f s", preset, seed, runs[-1]["top1"],
                         runs[-1]["seconds"])
            out[preset] = summarise(runs)
        if "batches" in parts:
            from localrules.spaces import default_budget

            out["bp_by_batch"] = {}
            for batch in default_budget("digits").batch_sizes:
                r = train_preset("bp", 0, tmp, "--batch-size", str(batch))
                out["bp_by_batch"][str(batch)] = {"top1": _round(r["top1"]),
                                                  "seconds": _round(r["seconds"], 1)}
                log.info("bp at batch %d: top-1 %.4f in %.0f s", batch, r["top1"],
                         r["seconds"])
        if "search" in parts:
            out.update(readme_search(tmp))
            log.info("README search: best %.4f (gap closed %s) in %.0f s", out["search_best"],
                     out["search_best_gap_closed"], out["search_seconds"])
    out["goals"] = GOALS
    print(json.dumps(out))


if __name__ == "__main__":
    main()
