"""The trial configuration: what one trial trains, validated at the edge, JSON in and JSON out.

Spaces produce it, the store keeps it (as JSON), workers validate it before they run it, and the
trainer reads it. It imports nothing heavy: the rule and run parts are the plain dataclasses of
``localrules.rules``.

Overrides use dotted keys (``run.alignment_lr=1e-3``, ``rule.weights.amp=0.5``,
``rule.ops.relu_backward=true``, ``rule.noise.stddev=0.7``); values are read as JSON where they
parse (numbers, true/false, null, lists) and as strings otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules.rules.presets import RunParams, get_preset, rule_preset
from localrules.rules.spec import Rule
from localrules.validation import (
    EPOCHS,
    IMAGE_SIZE,
    MAGNITUDE,
    SEED,
    WIDTH,
    Limit,
    check_choice,
    check_json,
    check_keys,
    check_str,
    dataclass_from_dict,
    shown,
)

STRATEGIES: tuple[str, ...] = ("auto", "default", "mirrored", "tpu")
NOISE_DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform")
WEIGHT_SAMPLES = Limit(0, 2**24, integer=True)
"""Entries of a layer's (W, B) kept per validation point (the default 4096)."""


@dataclass(frozen=True)
class UpdateNoise:
    """Noisy updates (appendix B.3): after each optimizer update, every variable in that
    optimizer's list gets ``lr_t · ε`` added, ε ~ N(0, v) or U(−√(3v), √(3v)), v the variance, so
    the noise shrinks with the learning-rate drops. The task optimizer's list holds the forward
    weights (and B under Kolen–Pollack); the alignment optimizer's holds B."""

    task_variance: float = 0.0
    alignment_variance: float = 0.0
    distribution: str = "normal"

    def __post_init__(self) -> None:
        MAGNITUDE.check("update_noise.task_variance", self.task_variance)
        MAGNITUDE.check("update_noise.alignment_variance", self.alignment_variance)
        check_choice("update noise distribution", self.distribution, NOISE_DISTRIBUTIONS)

    @property
    def enabled(self) -> bool:
        return self.task_variance > 0 or self.alignment_variance > 0


@dataclass(frozen=True)
class TrialConfig:
    """Everything one training run needs besides where its files go."""

    model: str = "resnet18"
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Per-dataset options, e.g. ImageNet's ``train_examples`` or ``label_offset``."""
    width: int = 64
    rule: Rule = field(default_factory=lambda: Rule("backprop"))
    run: RunParams = field(default_factory=RunParams)
    update_noise: UpdateNoise = field(default_factory=UpdateNoise)
    seed: int = 0
    eval_every: int = 1
    weight_samples: int = 4096
    """Entries of each layer's (W, B) kept at every validation point for the weight-scatter
    figure (Fig. S3); 0 keeps only the per-layer metrics. A layer with fewer entries is kept
    whole."""
    strategy: str = "auto"
    deterministic: bool = False

    def __post_init__(self) -> None:
        WIDTH.check("width", self.width)
        SEED.check("seed", self.seed)
        EPOCHS.check("eval_every", self.eval_every)
        WEIGHT_SAMPLES.check("weight_samples", self.weight_samples)
        if self.image_size is not None:
            IMAGE_SIZE.check("image_size", self.image_size)
        check_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.dataset_options, Mapping):
            raise ValueError(f"dataset_options must be a mapping, got {self.dataset_options!r}")
        # Model and dataset names are checked against their registries by the code that loads
        # them (models/, data/), which this module must not import.
        if self.run.optimizer == "joint" and self.update_noise.alignment_variance > 0:
            raise ValueError("update_noise.alignment_variance needs the separate alignment "
                             "optimizer; under run.optimizer 'joint' B is in the task optimizer: "
                             "use update_noise.task_variance")
        if self.run.alignment_lr is None and self.rule.has_alignment_loss \
                and self.run.optimizer == "separate":
            raise ValueError(
                f"rule {self.rule.kind!r} has an alignment loss but run.alignment_lr is not set"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        """A validated config from JSON-like data; ValueError (only) for anything else."""
        return dataclass_from_dict(cls, data, "config")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            "dataset_options": dict(self.dataset_options),
            "width": self.width,
            "rule": self.rule.to_dict(),
            "run": self.run.to_dict(),
            "update_noise": dataclasses.asdict(self.update_noise),
            "seed": self.seed,
            "eval_every": self.eval_every,
            "weight_samples": self.weight_samples,
            "strategy": self.strategy,
            "deterministic": self.deterministic,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialConfig:
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("trial config is nested too deep to be a config") from None
        except ValueError as err:  # not JSON, or an integer of thousands of digits
            raise ValueError(f"trial config is not valid JSON: {err}") from None
        return cls.from_dict(data)


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses, otherwise the string itself."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"value {shown(text)} is nested too deep") from None
    except ValueError:  # not JSON (or an integer of thousands of digits): the string itself
        return text


OPEN_MAPPINGS = frozenset({"weights", "dataset_options"})
"""Config mappings whose keys are not fixed (checked by Rule and by the dataset's loader)."""


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (command-line strings) to a config dict; see set_keys."""
    values: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like key=value (e.g. run.epochs=3)")
        try:
            values.append((key.strip(), parse_value(raw.strip())))
        except ValueError as err:
            raise ValueError(f"override {key.strip()!r}: {err}") from None
    return set_keys(data, values)


def set_keys(
    data: Mapping[str, Any], values: Mapping[str, Any] | Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """Set dotted keys (``rule.noise.stddev``) to values in a config dict; a deep copy is returned.

    An unknown key anywhere on the path is an error listing the valid keys at that level; a
    ``null`` section (``rule.noise``) is created when one of its keys is set. The values' types are
    checked when the result is turned into a TrialConfig.
    """
    out = json.loads(json.dumps(data))
    items = values.items() if isinstance(values, Mapping) else values
    for key, value in items:
        check_str("config key", key)
        check_json(f"the value of {key!r}", value, numbers=False)  # copied and dumped below
        path = key.split(".")
        node, open_keys = out, False
        for depth, part in enumerate(path):
            where = ".".join(path[: depth + 1])
            if not isinstance(node, dict):
                raise ValueError(f"cannot set {key!r}: {'.'.join(path[:depth])} is not a section")
            if part not in node and not open_keys:
                raise ValueError(f"unknown config key {where!r}; valid: {', '.join(sorted(node))}")
            if depth == len(path) - 1:
                # A copy: a later key below this one must not write into the caller's value.
                node[part] = copy.deepcopy(value)
                break
            if node.get(part) is None:  # a null section, or a new key of an open mapping
                node[part], open_keys = {}, True
            else:
                open_keys = part in OPEN_MAPPINGS
            node = node[part]
    return out


def config_from_preset(
    preset: str | None = None,
    rule: str | None = None,
    base: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> TrialConfig:
    """A validated TrialConfig from a preset name (rule and run) or a rule name (default run),
    then ``base`` entries, then ``--set`` overrides."""
    if preset is not None and rule is not None:
        raise ValueError("give a preset or a rule, not both")
    data = TrialConfig().to_dict()
    if preset is not None or rule is not None:
        p = get_preset(preset) if preset is not None else rule_preset(rule)
        data["rule"], data["run"] = p.rule.to_dict(), p.run.to_dict()
    for key, value in (base or {}).items():
        check_keys("config key", {key: value}, data)
        if isinstance(value, Mapping) and isinstance(data[key], dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrialConfig.from_dict(apply_overrides(data, overrides))
