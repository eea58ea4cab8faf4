"""Train one stored trial with the trainer and turn its outcome into a result document.

The objective is validation top-1 at the final epoch. A diverged run (NaN/Inf) scores chance
level (1 / number of classes), so TPE learns that the region is bad instead of forgetting it.
Every epoch's record carries the objective so far (the latest validated top-1, chance before
the first validation or after a divergence), which early stopping compares across trials.
Checkpoints live in the trial's artifact directory; a requeued trial resumes from them. The
result document is a ``results.TrialResult``, the same type the Ray engine stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from localrules.config import TrialConfig
from localrules.results import TrialResult, objective
from localrules.runs import RunDirectory

log = logging.getLogger(__name__)


def validate_config(data: Mapping[str, Any]) -> TrialConfig:
    """A stored config checked against the schema and the model and dataset registries."""
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.validation import check_choice

    if not isinstance(data, Mapping):
        raise ValueError(f"a trial config must be a mapping, got {type(data).__name__}")
    config = TrialConfig.from_dict(data)
    check_choice("model", config.model, MODELS)
    check_choice("dataset", config.dataset, DATASETS)
    return config


def train_trial(config: TrialConfig, out_dir: str,
                on_epoch: Callable[[dict[str, Any]], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                may_write: Callable[[], bool] | None = None,
                until_epoch: int | None = None) -> dict[str, Any]:
    """Train (or resume) the trial in ``out_dir``; return its result document. ``should_stop``,
    ``may_write`` and ``until_epoch`` (a multi-fidelity rung's epochs) go to ``Trainer.fit``.
    The directory's run is resumed under the one resume policy (``RunDirectory.resumes``; a run
    of another config there is an error)."""
    import gc

    import keras

    from localrules.train.trainer import start_run

    started = time.time()
    trainer, restored = start_run(config, out_dir, resume=True, may_write=may_write)
    if restored:
        log.info("resumed from the checkpoint in %s at step %d", out_dir, int(trainer.step))
    chance = 1.0 / trainer.dataset.info.num_classes
    report = None if on_epoch is None else _reporter(on_epoch, RunDirectory(out_dir),
                                                     int(trainer.step), chance)
    try:
        outcome = trainer.fit(on_epoch=report, should_stop=should_stop, may_write=may_write,
                              until_epoch=until_epoch)
    finally:
        del trainer
        keras.backend.clear_session()
        gc.collect()
    return TrialResult.of_run(outcome, chance=chance, seconds=time.time() - started,
                              run_dir=out_dir).to_document()


def _reporter(on_epoch: Callable[[dict[str, Any]], None], run_dir: RunDirectory, step: int,
              chance: float) -> Callable[[dict[str, Any]], None]:
    """``on_epoch`` given each record with ``chance`` and the objective so far: the latest
    validated top-1, a resumed run's included (its history up to the restored ``step``)."""
    validated = [r["top1"] for r in run_dir.read_history(missing_ok=True)
                 if r["step"] <= step and r.get("top1") is not None]
    latest = {"top1": validated[-1] if validated else None}

    def report(record: dict[str, Any]) -> None:
        if record.get("top1") is not None:
            latest["top1"] = record["top1"]
        on_epoch({**record, "chance": chance,
                  "objective": objective(latest["top1"], bool(record.get("diverged")), chance)})

    return report
