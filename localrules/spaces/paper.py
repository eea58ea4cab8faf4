"""The paper's four TPE searches (appendix B.1, paper-spec §F) as parameter trees.

Each search adds to the one before it:

- ``wm``: weight mirror with Akrout et al.'s fixed operations; σ uniform [1e-10, 1], the amp/decay
  ratio uniform [0.1, 200], the decay weight log-uniform [1e-11, 1e7]. The run settings the
  appendix leaves unstated are the +AD searches' schedule with η = 1e-3, simultaneous updates
  (as the ``wm-tpe`` preset).
- ``wm-ad``: + |B| (the paper's {256, 1024, 2048, 4096} at lr = |B|/2048; on another dataset the
  budget's choices, lr linear in |B|), Adam η log-uniform [1e-6, 1e-2], delay ∈ {0, 1, 2} epochs
  of a 45-epoch paper trial (scaled to the budget like the rest of the schedule), alternation vs
  simultaneous updates; input noise becomes a choice with σ beneath its "on" branch (Fig. S2 B
  ranks "whether to use Gaussian noise").
- ``wm-ad-ops``: + the twelve boolean path operations.
- ``ia``: information alignment, + the null weight log-uniform [1e-11, 1e7].

Weights are named by primitive (DESIGN.md decision 1): the appendix's β weighs decay and α/β is
the amp-to-decay ratio, so the sampled ``amp_decay_ratio`` and ``decay`` give amp = ratio · decay.
The delay-dependent warmup of η is the schedule's (alignment schedule "task": warmed up like the
task rate when the delay is 0, constant until the shifted drops otherwise; paper-spec §E.2).

Each search's first trial is the rule it published (``WARM_STARTS``: wm → wm-tpe, …, ia →
ia-tpe) on the budget, a real trial TPE learns from, so a search is never worse than the paper's
rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localrules.rules.presets import get_preset
from localrules.rules.spec import AKROUT_OPS, PathOps
from localrules.spaces.budget import Budget
from localrules.spaces.nodes import Choice, LogUniform, Node, Option, Uniform
from localrules.spaces.space import Space

PAPER_SPACES: tuple[str, ...] = ("wm", "wm-ad", "wm-ad-ops", "ia")
PAPER_DELAYS: tuple[int, ...] = (0, 1, 2)
WARM_STARTS: Mapping[str, str] = {"wm": "wm-tpe", "wm-ad": "wm-ad-tpe",
                                  "wm-ad-ops": "wm-ad-ops-tpe", "ia": "ia-tpe"}
"""The published rule each search found (Table 3), queued as its first trial."""
DESCRIPTIONS: Mapping[str, str] = {
    "wm": "weight mirror, Akrout ops fixed: σ, amp/decay ratio, decay (appendix B.1.1)",
    "wm-ad": "weight mirror + batch size, Adam η, delay, alternation, noise on/off (B.1.2)",
    "wm-ad-ops": "wm-ad + the twelve boolean path operations (B.1.3)",
    "ia": "information alignment: wm-ad-ops + the null weight (B.1.4)",
}
DERIVED = "rule.weights.amp = amp_decay_ratio · decay"


def _weights() -> tuple[Node, ...]:
    return (
        Uniform("amp_decay_ratio", None, 0.1, 200.0),
        LogUniform("decay", "rule.weights.decay", 1e-11, 1e7),
    )


def _sigma() -> Node:
    return Uniform("sigma", "rule.noise.stddev", 1e-10, 1.0)


def _noise_choice() -> Node:
    return Choice("noise", None, (
        Option(False, (), {"rule.noise": None}),
        Option(True, (_sigma(),)),
    ))


def _adaptive(budget: Budget) -> tuple[Node, ...]:
    """The +AD additions: batch size (the budget's choices; lr linear in it), Adam η, delay (in
    paper epochs of a 45-epoch trial, scaled to the budget like the rest of the schedule),
    alternation."""
    delays = tuple(Option(d, (), {"run.delay_epochs": budget.delay_epochs(d)})
                   for d in PAPER_DELAYS)
    return (
        Choice("batch_size", "run.batch_size", tuple(Option(b) for b in budget.batch_sizes)),
        LogUniform("alignment_lr", "run.alignment_lr", 1e-6, 1e-2),
        Choice("delay_epochs", None, delays),
        Choice("alternate", "run.alternate", (Option(True), Option(False))),
    )


def _ops() -> tuple[Node, ...]:
    return tuple(Choice(name, f"rule.ops.{name}", (Option(False), Option(True)))
                 for name in PathOps.names())


def _amp_from_ratio(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"rule.weights.amp": params["amp_decay_ratio"] * params["decay"]}


def _base(kind: str, budget: Budget, ops: PathOps) -> dict[str, Any]:
    """Config keys every trial of a paper search shares (the budget's schedule and lr rule)."""
    return {
        "rule.kind": kind,
        "rule.ops": ops.to_dict(),
        "rule.noise": {"stddev": 0.5, "distribution": "normal"},
        "run.alignment_lr": 1e-3,
        "run.alignment_schedule": "task",
        "run.delay_epochs": 0.0,
        "run.alternate": False,
        **budget.settings(),
    }


def paper_space(name: str, budget: Budget) -> Space:
    """One of the paper's searches (``wm``, ``wm-ad``, ``wm-ad-ops``, ``ia``) under a budget."""
    if name not in PAPER_SPACES:
        raise ValueError(f"unknown paper space {name!r}; valid: {', '.join(PAPER_SPACES)}")
    kind = "information" if name == "ia" else "weight_mirror"
    if name == "wm":
        nodes: tuple[Node, ...] = (_sigma(), *_weights())
    else:
        nodes = (_noise_choice(), *_weights(), *_adaptive(budget))
    if name in ("wm-ad-ops", "ia"):
        nodes += _ops()
    if name == "ia":
        nodes += (LogUniform("null", "rule.weights.null", 1e-11, 1e7),)
    return Space(
        name=name,
        nodes=nodes,
        base=_base(kind, budget, PathOps() if name in ("wm-ad-ops", "ia") else AKROUT_OPS),
        derive=_amp_from_ratio,
        description=DESCRIPTIONS[name],
        derived=DERIVED,
        source={"paper": name},
        budget=budget,
        warm_starts=((WARM_STARTS[name], warm_start_params(name, budget)),),
        reading="appendix",
    )


def warm_start_params(name: str, budget: Budget) -> dict[str, Any]:
    """The rule search ``name`` published (Table 3), as params of its space on ``budget``: the
    appendix's own numbers (σ, α/β, β, γ, η, delay, alternation, ops) and the budget's standard
    batch (the paper's 256)."""
    preset = get_preset(WARM_STARTS[name])
    values = preset.extras
    params: dict[str, Any] = {"amp_decay_ratio": values["alpha/beta"], "decay": values["beta"]}
    if name == "wm":
        return {"sigma": values["sigma"], **params}
    params.update(noise=True, sigma=values["sigma"],
                  batch_size=budget.closest_batch(budget.batch_size),
                  alignment_lr=values["eta"], delay_epochs=values["delay_epochs"],
                  alternate=preset.run.alternate)
    if name in ("wm-ad-ops", "ia"):
        params.update(preset.rule.ops.to_dict())
    if name == "ia":
        params["null"] = values["gamma"]
    return params
