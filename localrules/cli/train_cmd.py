"""``localrules train``: one trial end to end, with a progress bar and a final JSON summary line.

Everything is validated before anything is written: the preset or rule, every ``--set`` key and
value, the model and dataset names, the data directory, and the output directory's state (an
existing run needs ``--resume``; a resumed run must have the same config).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 143
"""128 + SIGTERM: the run checkpointed and stopped; run again with --resume."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one ResNet with one learning rule",
                       description="Train one trial. Prints a JSON summary line at the end.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset (see `localrules rules`): rule and schedule")
    source.add_argument("--rule", help="a rule kind (bp fa wm ia sa aa kp) with default schedule")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. run.alignment_lr=1e-3 (repeatable)")
    p.add_argument("--model", help="e.g. resnet18 (default), resnet50v2")
    p.add_argument("--dataset", help="digits (default), cifar10, imagenet, synthetic")
    p.add_argument("--data-dir", help="directory of the dataset's files (local or gs://)")
    p.add_argument("--width", type=int, help="first group's channel count (paper: 64)")
    p.add_argument("--epochs", type=int, help="task epochs")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--seed", type=int, help="seed for weights, data order and noise")
    p.add_argument("--out", required=True, help="run directory (local or gs://)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic TF ops (slower; bit-identical resumes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def build_config(args: argparse.Namespace):
    from localrules.config import config_from_preset

    overrides = list(args.overrides)
    flag_keys = {"model": "model", "dataset": "dataset", "data_dir": "data_dir",
                 "width": "width", "epochs": "run.epochs", "batch_size": "run.batch_size",
                 "seed": "seed"}
    for attr, key in flag_keys.items():
        value = getattr(args, attr)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.deterministic:
        overrides.append("deterministic=true")
    return config_from_preset(preset=args.preset, rule=args.rule, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    # Names are checked against the registries before TensorFlow builds anything.
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.validation import check_choice

    check_choice("model", config.model, MODELS)
    check_choice("dataset", config.dataset, DATASETS)

    from localrules.train.trainer import Trainer, read_config, write_config

    existing = read_config(args.out)
    if existing is not None and not args.resume:
        raise ValueError(f"{args.out} already holds a run; pass --resume to continue it, "
                         "or choose another --out")
    if args.resume and existing is not None and existing != config:
        raise ValueError(f"--resume with a different config than the run in {args.out}")
    trainer = Trainer(config, args.out, progress=not args.no_progress and sys.stderr.isatty())
    write_config(config, args.out)
    if args.resume:
        trainer.restore()

    def report(record: dict) -> None:
        top1 = record.get("top1")
        log.info("epoch %d: train loss %s, top-1 %s", record["epoch"],
                 _fmt(record.get("train_loss")), _fmt(top1))

    result = trainer.fit(on_epoch=report)
    print(json.dumps(result.to_dict()))
    return EXIT_INTERRUPTED if result.interrupted else 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
