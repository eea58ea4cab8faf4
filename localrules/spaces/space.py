"""A search space: a parameter tree, the config every trial shares, and the map from params to a
validated trial config.

``config(params)`` is the only way a sample becomes something a worker runs: the base settings,
then each active parameter's config key, each chosen option's settings, then derived values, all
checked by ``TrialConfig``. A space is rebuilt from its ``source`` (a paper space's name or a YAML
file's text) and the experiment's budget, so the store never holds code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localrules.config import TrialConfig, set_keys
from localrules.spaces.budget import Budget
from localrules.spaces.nodes import (
    Choice,
    IntUniform,
    LogUniform,
    Node,
    Scalar,
    Uniform,
    active,
    check_params,
    check_tree,
    params_from_vals,
    to_hyperopt,
    vals_from_params,
    walk,
)

Derive = Callable[[Mapping[str, Scalar]], Mapping[str, Any]]


@dataclass(frozen=True)
class Space:
    name: str
    nodes: tuple[Node, ...]
    base: Mapping[str, Any] = field(hash=False)
    """Dotted config keys every trial shares (budget included), applied before the params."""
    budget: Budget
    source: Mapping[str, Any] = field(hash=False)
    """How to rebuild this space: ``{"paper": name}`` or ``{"yaml": text}``."""
    derive: Derive | None = None
    """Config keys computed from the params (a paper space's amp = ratio · decay)."""
    description: str = ""
    derived: str = ""
    """What ``derive`` computes, for people (``rule.weights.amp = amp_decay_ratio · decay``)."""
    scales_batches: bool = True
    """Whether batch sizes are the budget's choices (paper spaces) or as written (YAML)."""
    warm_starts: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), hash=False)
    """(label, params) points queued before TPE's first suggestion: a paper space's published
    rule, a YAML space's ``warm_start`` list. Checked like any sample."""
    reading: str = "none"
    """How the space reads the appendix's α/β/γ (the presets' ``reading``): a paper space's
    weights follow the appendix; a YAML space inherits its base preset's."""

    def __post_init__(self) -> None:
        check_tree(self.nodes)
        for label, params in self.warm_starts:
            try:
                self.config(params)
            except ValueError as err:
                raise ValueError(f"warm start {label!r}: {err}") from None

    # --- hyperopt -----------------------------------------------------------------------------
    def to_hyperopt(self) -> dict[str, Any]:
        return to_hyperopt(self.nodes)

    def labels(self) -> tuple[str, ...]:
        return tuple(n.name for n in walk(self.nodes))

    def params_from_vals(self, vals: Mapping[str, Sequence[Any]]) -> dict[str, Scalar]:
        return params_from_vals(self.nodes, vals)

    def vals_from_params(self, params: Mapping[str, Any]) -> dict[str, list[Any]]:
        return vals_from_params(self.nodes, params)

    # --- configs ------------------------------------------------------------------------------
    def check_params(self, params: Mapping[str, Any]) -> dict[str, Scalar]:
        return check_params(self.nodes, params)

    def settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The dotted config keys a sample sets, in the order they apply."""
        out: dict[str, Any] = dict(self.base)

        def put(key: str, value: Any) -> None:  # after everything before it, base included
            out.pop(key, None)
            out[key] = value

        for node, option in active(self.nodes, params):
            if node.key is not None:
                put(node.key, params[node.name])
            if option is not None:
                for key, value in option.settings.items():
                    put(key, value)
        if self.derive is not None:
            for key, value in self.derive(params).items():
                put(key, value)
        return out

    def config(self, params: Mapping[str, Any], seed: int = 0) -> TrialConfig:
        """The validated trial config of a sample (``seed`` seeds the trial's own training)."""
        params = self.check_params(params)
        data = set_keys(TrialConfig().to_dict(), {**self.settings(params), "seed": seed})
        try:
            return TrialConfig.from_dict(data)
        except ValueError as err:
            raise ValueError(f"space {self.name!r} gives an invalid trial config for "
                             f"{json.dumps(params)}: {err}") from None

    # --- identity and description -------------------------------------------------------------
    def tree(self) -> list[dict[str, Any]]:
        """The parameter tree as JSON (for the experiment document and reports)."""
        return [_node_json(n) for n in self.nodes]

    def fingerprint(self) -> str:
        """Changes whenever a sample could map to a different config, or the budget changes."""
        text = json.dumps({"tree": self.tree(), "base": self.base, "derived": self.derived,
                           "budget": self.budget.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe_budget(self) -> str:
        return self.budget.describe(batches=self.scales_batches)

    def describe(self) -> str:
        lines = [f"space {self.name}" + (f": {self.description}" if self.description else ""),
                 f"budget: {self.describe_budget()}"]

        def visit(nodes: Sequence[Node], depth: int) -> None:
            for node in nodes:
                target = f" → {node.key}" if node.key else ""
                lines.append(f"{'  ' * depth}- {node.name}: {node.describe()}{target}")
                if isinstance(node, Choice):
                    for option in node.options:
                        if option.children or option.settings:
                            sets = ", ".join(f"{k}={json.dumps(v)}"
                                             for k, v in option.settings.items())
                            lines.append(f"{'  ' * (depth + 1)}when {node.name} = "
                                         f"{json.dumps(option.value)}"
                                         + (f": sets {sets}" if sets else "")
                                         + (":" if option.children else ""))
                            visit(option.children, depth + 2)

        visit(self.nodes, 0)
        if self.derived:
            lines.append(f"derived: {self.derived}")
        for label, params in self.warm_starts:
            lines.append(f"warm start {label} (the first trial unless warm_start is off): "
                         f"{json.dumps(params)}")
        return "\n".join(lines)


_KIND_OF = {Uniform: "uniform", LogUniform: "loguniform", IntUniform: "int", Choice: "choice"}


def _node_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"name": node.name, "type": _KIND_OF[type(node)], "key": node.key}
    if isinstance(node, Choice):
        out["options"] = [{"value": o.value, "settings": dict(o.settings),
                           "children": [_node_json(c) for c in o.children]}
                          for o in node.options]
    else:
        out["low"], out["high"] = node.low, node.high  # type: ignore[attr-defined]
    return out
