"""Named configurations from the paper's appendix: the rule plus the run metaparameters.

Numbers are the appendix's, digit for digit (paper-spec §E.4). For weight mirror and information
alignment the appendix names the primitive each weight multiplies ("α/β is the ratio between the
weighting of P_amp and P_decay", "β weighs P_decay", "γ weighs P_null"); the reference code reads
the same symbols the other way round. The plain presets follow the appendix; each ``-code`` preset
gives the reference code's reading, so both can be tried (DESIGN.md decision 1).

Where the appendix does not state a run setting, the preset says so in ``source`` and uses the
setting documented there instead of inventing silence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules.rules.spec import AKROUT_OPS, KIND_BY_SHORT, KINDS, Noise, PathOps, Rule
from localrules.validation import (
    BATCH_SIZE,
    EPOCH_TIME,
    EPOCHS,
    MAGNITUDE,
    Limit,
    check_bool,
    check_choice,
    dataclass_from_dict,
    shown,
)

ALIGNMENT_SCHEDULES: tuple[str, ...] = ("task", "drops", "constant")
OPTIMIZERS: tuple[str, ...] = ("separate", "joint")
MOMENTUM = Limit(0, 1, high_open=True)
DROP_FACTOR = Limit(0, 1, low_open=True)
MAX_DROPS = 100
READINGS_OF_SYMBOLS: tuple[str, ...] = ("appendix", "code", "none")
"""How a preset reads the appendix's α/β/γ: by the appendix's own primitive names, by the
reference code's flags, or not at all (no primitive weights)."""


@dataclass(frozen=True)
class RunParams:
    """How a preset trains: two optimizers, schedules, delay and alternation (paper-spec §E).

    ``task_lr`` is the Nesterov learning rate at ``lr_reference_batch`` examples per step; with a
    reference batch the effective rate is ``task_lr · batch_size / lr_reference_batch`` (the TPE
    searches' |B|/2048), without one ``task_lr`` is used as is. ``weight_decay`` is in the TF1
    convention (``λ·½Σw²`` on forward kernels and the classifier bias only; DESIGN.md decision 5).
    ``alignment_schedule="task"`` gives η the task rate's warmup (when ``delay_epochs == 0``) and
    drops; ``"drops"`` keeps η constant but drops it with the task rate (appendix B.3's SA/AA
    schedule); ``"constant"`` keeps η fixed.

    ``optimizer="separate"`` is the paper's pair: Nesterov on J for the forward weights, Adam (η)
    on R for B. ``"joint"`` is the reference code's default path: one Nesterov SGD on
    r_J·J + r_R·R for every weight, B included, at the task rate's schedule (η unused).

    Epoch counts (warmup, drops, delay) may be fractional: a budget maps the paper's schedule
    onto a dataset by fractions of training (``spaces/budget.py``).
    """

    batch_size: int = 256
    task_lr: float = 0.1
    lr_reference_batch: int | None = None
    momentum: float = 0.9
    warmup_epochs: float = 5.0
    drop_epochs: tuple[float, ...] = (30.0, 60.0, 80.0)
    drop_factor: float = 0.1
    epochs: int = 90
    weight_decay: float = 1e-4
    alignment_lr: float | None = None
    alignment_schedule: str = "constant"
    delay_epochs: float = 0.0
    alternate: bool = False
    optimizer: str = "separate"

    def __post_init__(self) -> None:
        BATCH_SIZE.check("batch_size", self.batch_size)
        EPOCHS.check("epochs", self.epochs)
        EPOCH_TIME.check("delay_epochs", self.delay_epochs)
        if self.lr_reference_batch is not None:
            BATCH_SIZE.check("lr_reference_batch", self.lr_reference_batch)
        for name in ("task_lr", "weight_decay"):
            MAGNITUDE.check(name, getattr(self, name))
        EPOCH_TIME.check("warmup_epochs", self.warmup_epochs)
        if self.alignment_lr is not None:
            MAGNITUDE.check("alignment_lr", self.alignment_lr)
        MOMENTUM.check("momentum", self.momentum)
        DROP_FACTOR.check("drop_factor", self.drop_factor)
        if not isinstance(self.drop_epochs, (list, tuple)) or len(self.drop_epochs) > MAX_DROPS:
            raise ValueError(f"drop_epochs must be a list of at most {MAX_DROPS} epochs, got "
                             f"{shown(self.drop_epochs)}")
        drops = tuple(EPOCH_TIME.check("drop_epochs", d) for d in self.drop_epochs)
        if list(drops) != sorted(set(drops)) or (drops and drops[0] <= 0):
            raise ValueError(f"drop_epochs must be positive and strictly increasing, got "
                             f"{list(drops)}")
        check_bool("alternate", self.alternate)
        check_choice("alignment schedule", self.alignment_schedule, ALIGNMENT_SCHEDULES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.optimizer == "joint" and self.delay_epochs > 0:
            raise ValueError("optimizer 'joint' has one learning rate, the task schedule's, which "
                             "is 0 during a delay: delay_epochs must be 0 (or use the separate "
                             f"optimizers), got {self.delay_epochs:g}")
        object.__setattr__(self, "drop_epochs", drops)
        object.__setattr__(self, "delay_epochs", float(self.delay_epochs))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunParams:
        # A preset's JSON adds the derived effective_task_lr for readers; it is not a setting.
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if k != "effective_task_lr"}
        return dataclass_from_dict(cls, data, "run")

    @property
    def effective_task_lr(self) -> float:
        if self.lr_reference_batch is None:
            return self.task_lr
        return self.task_lr * self.batch_size / self.lr_reference_batch

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["drop_epochs"] = list(self.drop_epochs)
        return data

    def stretched(self, epochs: int) -> RunParams:
        """The same schedule over ``epochs``: warmup, drops and delay scaled by
        ``epochs / self.epochs``, so they land at the same fractions of training."""
        scale = EPOCHS.check("epochs", epochs) / self.epochs
        return dataclasses.replace(
            self, epochs=epochs, warmup_epochs=epoch_count(self.warmup_epochs * scale),
            drop_epochs=tuple(epoch_count(d * scale) for d in self.drop_epochs),
            delay_epochs=epoch_count(self.delay_epochs * scale))


def epoch_count(value: float) -> float:
    """A scaled epoch count, rounded to 6 decimals (so JSON and fingerprints stay readable)."""
    return round(float(value), 6)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    rule: Rule
    run: RunParams
    source: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    """The appendix's own numbers (α/β, β, …) kept beside the derived weights, for provenance."""
    reading: str = "none"
    """Which reading of the appendix's α/β/γ gives the weights (``READINGS_OF_SYMBOLS``)."""

    def __post_init__(self) -> None:
        check_choice("preset reading", self.reading, READINGS_OF_SYMBOLS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "rule": self.rule.to_dict(),
            "run": {**self.run.to_dict(), "effective_task_lr": self.run.effective_task_lr},
            "reading": self.reading,
            "reading_note": READING_NOTES[self.reading],
            "source": self.source,
            "appendix_values": dict(self.extras),
        }


READING_NOTES: Mapping[str, str] = {
    "appendix": "the appendix's names: α weighs amp, β decay, γ null (B.1.1, B.1.4)",
    "code": "the reference code's flags (WM: alpha·decay + beta·amp; IA: alpha·amp + beta·null "
            "+ gamma·decay; SA: alpha·decay + beta·self; AA: alpha·sparse + beta·amp)",
    "none": "no primitive weights to read",
}


# The Table-4 schedule of appendix B.2 (He et al. 2016).
TABLE4_RUN = RunParams(batch_size=256, task_lr=0.1, warmup_epochs=5.0, epochs=90)


def _tpe_run(alignment_lr: float, delay_epochs: int, alternate: bool) -> RunParams:
    """The +AD searches' final-model schedule (appendix B.1.2, Buchlovsky et al. 2019)."""
    return RunParams(
        batch_size=256,
        task_lr=1.0,
        lr_reference_batch=2048,
        warmup_epochs=6.0,
        epochs=100,
        alignment_lr=alignment_lr,
        alignment_schedule="task",
        delay_epochs=delay_epochs,
        alternate=alternate,
    )


_WM_TPE_RUN_NOTE = (
    " Its run settings (batch size, learning rates, optimizer for R, delay, alternation) are not "
    "stated; this preset uses the +AD searches' schedule with η = 1e-3, simultaneous updates."
)


# Which primitive each appendix symbol weighs, in the appendix's reading and in the code's.
READINGS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "weight_mirror": ({"amp": "alpha", "decay": "beta"}, {"decay": "alpha", "amp": "beta"}),
    "information": (
        {"amp": "alpha", "decay": "beta", "null": "gamma"},
        {"amp": "alpha", "null": "beta", "decay": "gamma"},
    ),
}


def _reading(mapping: Mapping[str, str]) -> str:
    return ", ".join(f"{prim} = {symbol}" for prim, symbol in mapping.items())


def _tpe_presets(
    name: str, kind: str, values: dict[str, float], ops: PathOps, run: RunParams, source: str
):
    """Both readings of one TPE result: ``name`` (appendix) and ``name-code`` (reference code).

    ``values`` holds the appendix's numbers; α is derived from its α/β and β.
    """
    values = {**values, "alpha": values["alpha/beta"] * values["beta"]}
    noise = Noise(stddev=values["sigma"])
    appendix, code = READINGS[kind]
    for suffix, mapping, reading in (("", appendix, "appendix"), ("-code", code, "code")):
        yield Preset(
            name + suffix,
            f"{name} ({kind}), {'reference code' if suffix else 'appendix'} reading: "
            f"{_reading(mapping)}",
            Rule(kind, {prim: values[symbol] for prim, symbol in mapping.items()}, ops, noise),
            run,
            source + ("" if not suffix else " Reference-code reading of the symbols "
                      "(paper-spec §C.2)."),
            values,
            reading=reading,
        )


def _build() -> dict[str, Preset]:
    presets: list[Preset] = [
        Preset(
            "bp",
            "Backpropagation through the same asymmetric layers (exact autodiff)",
            Rule("backprop"),
            TABLE4_RUN,
            "Appendix B.2 schedule (He et al. 2016); Table-3 baseline settings are not stated.",
        ),
        Preset(
            "fa",
            "Feedback alignment: B fixed at its random initialisation",
            Rule("feedback"),
            TABLE4_RUN,
            "Run settings not stated in the appendix; uses the B.2 (Table 4) schedule.",
        ),
    ]
    table4_ops = PathOps(bias_forward=True, bias_backward=True)
    for kind, weights in (("symmetric", {"decay": 1e-3, "self": 2e-3}),
                          ("activation", {"sparse": 1e-3, "amp": 2e-3})):
        short = next(s for s, k in KIND_BY_SHORT.items() if k == kind)
        presets.append(Preset(
            short,
            f"{kind.capitalize()} alignment, Table 4 (non-local)",
            Rule(kind, weights, table4_ops),
            dataclasses.replace(TABLE4_RUN, alignment_lr=1e-3),
            "Appendix B.2: α = 1e-3, β = 2e-3 in the code's reading (α on decay/sparse), the "
            "only one under which these numbers pull B exactly to Wᵀ; biases on both paths, no "
            "ReLU. B.2 does not say whether η drops: constant, the code default. B.3's "
            "noisy-update runs drop the SA/AA η with the task rate: run.alignment_schedule="
            "drops gives that schedule.",
            reading="code",
        ))

    presets += _tpe_presets(
        "wm-tpe",
        "weight_mirror",
        {"sigma": 0.690465059717068, "alpha/beta": 15.6606919586, "beta": 0.028327320537228435},
        AKROUT_OPS,
        _tpe_run(alignment_lr=1e-3, delay_epochs=0, alternate=False),
        "Appendix B.1.1 (weights, σ, Akrout ops)." + _WM_TPE_RUN_NOTE,
    )
    presets += _tpe_presets(
        "wm-ad-tpe",
        "weight_mirror",
        {"sigma": 0.949983201505862, "alpha/beta": 13.9035614049, "beta": 2.8109006032182933e-8,
         "eta": 0.005268466140227959, "delay_epochs": 0, "batch_size": 256},
        AKROUT_OPS,
        _tpe_run(alignment_lr=0.005268466140227959, delay_epochs=0, alternate=True),
        "Appendix B.1.2.",
    )
    presets += _tpe_presets(
        "wm-ad-ops-tpe",
        "weight_mirror",
        {"sigma": 0.6401550883361206, "alpha/beta": 0.13444256251, "beta": 232.78563021186207,
         "eta": 0.0024814785849458275, "delay_epochs": 0, "batch_size": 256},
        PathOps(
            bias_forward=True,
            relu_forward=True,
            relu_backward=True,
            batch_center_forward_output=True,
            batch_center_backward_input=True,
            center_forward_output=True,
            normalize_backward_output=True,
        ),
        _tpe_run(alignment_lr=0.0024814785849458275, delay_epochs=0, alternate=True),
        "Appendix B.1.3.",
    )

    presets += _tpe_presets(
        "ia-tpe",
        "information",
        {"sigma": 0.8176668980121832, "alpha/beta": 129.112317983, "beta": 7.999046944679209,
         "gamma": 3.1610192645608835e-6, "eta": 0.009785729149984566, "delay_epochs": 1,
         "batch_size": 256},
        PathOps(
            bias_forward=True,
            bias_backward=True,
            relu_forward=True,
            batch_center_forward_output=True,
            center_forward_output=True,
            center_backward_output=True,
            normalize_backward_output=True,
        ),
        _tpe_run(alignment_lr=0.009785729149984566, delay_epochs=1, alternate=True),
        "Appendix B.1.4 (R_IA^TPE, the top local rule).",
    )
    return {p.name: p for p in presets}


PRESETS: Mapping[str, Preset] = _build()


def get_preset(name: str) -> Preset:
    return PRESETS[check_choice("preset", name, PRESETS)]


def rule_preset(name: str) -> Preset:
    """A preset by name, or for a rule kind (``wm``, ``information``, …) one made on the spot:
    the kind's default weights with the default run (η 1e-3 when it has an alignment loss)."""
    if name in PRESETS:
        return PRESETS[name]
    rule = resolve_rule(name)
    run = RunParams(alignment_lr=1e-3 if rule.has_alignment_loss else None)
    return Preset(name, f"{rule.kind} with its default weights", rule, run,
                  "No preset: the rule kind's default weights and the default run (η 1e-3).")


def resolve_rule(rule: Rule | str | Mapping[str, Any] | None) -> Rule:
    """A Rule from a Rule, a kind name (long or short), a preset name, a rule dict, or None (bp)."""
    if rule is None:
        return Rule("backprop")
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping):
        return Rule.from_dict(rule)
    if isinstance(rule, str):
        if rule in PRESETS:
            return PRESETS[rule].rule
        if rule in KINDS or rule in KIND_BY_SHORT:
            return Rule(rule)
        valid = sorted({*KINDS, *KIND_BY_SHORT, *PRESETS})
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(valid)}")
    raise ValueError(f"rule must be a Rule, a name or a dict, got {type(rule).__name__}")
