"""``localrules train``: one trial end to end, with a progress bar and a final JSON summary line.

By default a run trains on the dataset's budget, the same one a search's trials get
(``spaces/budget.py``): the paper's schedule by fractions of training, the dataset's epochs,
width, standard batch and learning-rate rule; ``--epochs`` stretches or shrinks that whole
schedule, ``--batch-size`` moves the learning rate linearly. ``--schedule preset`` trains the
preset's own run as the appendix gives it (ImageNet-scale epochs), for reproducing the paper.

Everything is validated before anything is written: the preset or rule, every ``--set`` key and
value, the model and dataset names, the data directory, and the output directory's state (an
existing run needs ``--resume``; a resumed run must have the same config: the one resume policy
of ``runs.RunDirectory.resumes``, which workers follow too).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 143
"""128 + SIGTERM: the run checkpointed and stopped; run again with --resume."""
SCHEDULES = ("budget", "preset")


def register(sub: argparse._SubParsersAction) -> None:
    from localrules.cli.arguments import number
    from localrules.validation import BATCH_SIZE, EPOCHS, IMAGE_SIZE, SEED, WIDTH

    p = sub.add_parser("train", help="train one ResNet with one learning rule",
                       description="Train one trial on the dataset's budget (the search's). "
                                   "Prints a JSON summary line at the end.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset (see `localrules rules`); default bp")
    source.add_argument("--rule", help="a rule kind (bp fa wm ia sa aa kp) with its default "
                                       "weights and η 1e-3")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. run.alignment_lr=1e-3 (repeatable)")
    p.add_argument("--model", help="e.g. resnet18 (default), resnet50v2")
    p.add_argument("--dataset", default="digits",
                   help="digits (default), cifar10, imagenet, synthetic")
    p.add_argument("--data-dir", help="directory of the dataset's files (local or gs://)")
    p.add_argument("--width", type=number(WIDTH),
                   help="first group's channels (default per dataset)")
    p.add_argument("--image-size", type=number(IMAGE_SIZE),
                   help="image side the model sees (default per dataset; digits upsample)")
    p.add_argument("--epochs", type=number(EPOCHS),
                   help="task epochs; the whole schedule (warmup, drops, delay) stretches")
    p.add_argument("--batch-size", type=number(BATCH_SIZE),
                   help="global batch size; on the budget the learning rate scales linearly "
                        "with it (under --schedule preset, as the preset says)")
    p.add_argument("--schedule", choices=SCHEDULES, default="budget",
                   help="budget: the dataset's budget, as a search trial (default); preset: "
                        "the preset's own run from the appendix")
    p.add_argument("--seed", type=number(SEED), help="seed for weights, data order and noise")
    p.add_argument("--out", required=True, help="run directory (local or gs://)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic TF ops (slower; bit-identical resumes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def build_config(args: argparse.Namespace):
    """The run's TrialConfig: the preset (or rule) on the dataset's budget, or on its own
    schedule, then the flags, then ``--set``."""
    from localrules.config import TrialConfig, apply_overrides, set_keys
    from localrules.rules.presets import get_preset, rule_preset
    from localrules.spaces import default_budget

    preset = get_preset(args.preset) if args.preset else rule_preset(args.rule or "bp")
    budget = default_budget(args.dataset, model=args.model, width=args.width,
                            image_size=args.image_size, data_dir=args.data_dir,
                            epochs=args.epochs)
    if args.schedule == "budget":
        data = budget.preset_config(preset).to_dict()
    else:
        run = preset.run.stretched(args.epochs) if args.epochs else preset.run
        data = set_keys(TrialConfig().to_dict(), {
            "dataset": budget.dataset, "model": budget.model, "width": budget.width,
            "image_size": budget.image_size, "data_dir": budget.data_dir,
            "rule": preset.rule.to_dict(), "run": run.to_dict()})
    flags = {"run.batch_size": args.batch_size, "seed": args.seed,
             "deterministic": args.deterministic or None}
    data = set_keys(data, {k: v for k, v in flags.items() if v is not None})
    return TrialConfig.from_dict(apply_overrides(data, args.overrides))


def check_out(out: str, resume: bool) -> None:
    """``--out`` can hold this run: not a file (nor under one), and with ``--resume`` a
    directory that holds a run. Checked before the config is built or TensorFlow started."""
    from localrules.cli.tables import check_out_dir
    from localrules.runs import RunDirectory

    check_out_dir(out)
    if resume and RunDirectory(out).read_config() is None:
        raise ValueError(f"--resume: {out!r} holds no run (no {RunDirectory(out).config}); "
                         "drop --resume to start one there")


def run(args: argparse.Namespace) -> int:
    check_out(args.out, args.resume)
    config = build_config(args)
    # Names are checked against the registries before TensorFlow builds anything.
    from localrules.data import DATASETS
    from localrules.models import MODELS
    from localrules.validation import check_choice

    check_choice("model", config.model, MODELS)
    check_choice("dataset", config.dataset, DATASETS)

    from localrules.runs import ConfigMismatch, RunExists
    from localrules.train.trainer import start_run

    run_ = config.run
    log.info("%s on %s (%s, width %d): %d epochs, batch %d at lr %.4g, warmup %g, drops at %s",
             config.rule.kind, config.dataset, config.model, config.width, run_.epochs,
             run_.batch_size, run_.effective_task_lr, run_.warmup_epochs,
             "/".join(f"{d:g}" for d in run_.drop_epochs if d < run_.epochs) or "none")
    try:
        trainer, _ = start_run(config, args.out, resume=args.resume,
                               progress=not args.no_progress and sys.stderr.isatty())
    except RunExists:
        raise ValueError(f"{args.out} already holds a run; pass --resume to continue it, "
                         "or choose another --out") from None
    except ConfigMismatch:
        raise ValueError(f"--resume with a different config than the run in {args.out}") \
            from None

    def report(record: dict) -> None:
        top1 = record.get("top1")
        log.info("epoch %d: train loss %s, top-1 %s", record["epoch"],
                 _fmt(record.get("train_loss")), _fmt(top1))

    result = trainer.fit(on_epoch=report)
    print(json.dumps(result.to_dict()))
    return EXIT_INTERRUPTED if result.interrupted else 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
