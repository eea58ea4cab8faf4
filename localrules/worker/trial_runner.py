"""Train one stored trial with the trainer and turn its outcome into a result document.

The objective is validation top-1 at the final epoch. A diverged run (NaN/Inf) scores chance
level (1 / number of classes), so TPE learns that the region is bad instead of forgetting it.
Every epoch's record carries the objective so far (the latest validated top-1, chance before
the first validation or after a divergence), which early stopping compares across trials.
Checkpoints live in the trial's artifact directory; a requeued trial resumes from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from localrules import __version__
from localrules.config import TrialConfig
from localrules.runs import json_safe

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
                may_write: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train (or resume) the trial in ``out_dir``; return its result document. ``should_stop``
    and ``may_write`` go to ``Trainer.fit``."""
    import gc

    import keras

    from localrules.train.history import read_history
    from localrules.train.trainer import Trainer, read_config, write_config

    started = time.time()
    existing = read_config(out_dir)
    resume = existing == config
    if existing is not None and not resume:
        log.warning("%s holds a run with another config; starting over", out_dir)
    trainer = Trainer(config, out_dir)
    if not resume:
        write_config(config, out_dir)
    elif trainer.restore():
        log.info("resumed from the checkpoint in %s at step %d", out_dir, int(trainer.step))
    chance = 1.0 / trainer.dataset.info.num_classes
    report = None
    if on_epoch is not None:
        # The latest validated top-1 so far, a resumed run's included (its restored history).
        validated = [r["top1"] for r in read_history(out_dir)
                     if r["step"] <= int(trainer.step) and r.get("top1") is not None]
        latest = {"top1": validated[-1] if validated else None}

        def report(record: dict[str, Any]) -> None:
            if record.get("top1") is not None:
                latest["top1"] = record["top1"]
            on_epoch({**record, "chance": chance,
                      "objective": objective(latest["top1"], bool(record.get("diverged")),
                                             chance)})

    try:
        outcome = trainer.fit(on_epoch=report, should_stop=should_stop, may_write=may_write)
    finally:
        del trainer
        keras.backend.clear_session()
        gc.collect()
    result = json_safe(outcome.to_dict())
    top1 = result.get("top1")
    result.update(
        objective=objective(top1, outcome.diverged, chance),
        chance=chance,
        seconds=time.time() - started,
        code_version=__version__,
        run_dir=out_dir,
    )
    return result


def objective(top1: float | None, diverged: bool, chance: float) -> float:
    """What TPE (and ASHA) maximise: top-1, or chance level for a diverged or unscored run."""
    return chance if diverged or top1 is None else float(top1)


