"""User spaces from a YAML file: nested choices with conditional children, validated up front.

Format (every key but ``parameters`` optional)::

    name: my-search
    description: IA with noise on/off
    base: ia-tpe                 # a preset: its rule and run are the starting point
    fixed:                       # dotted config keys every trial shares
      run.alternate: true
    parameters:                  # name → distribution; the name is the config key it sets
      run.alignment_lr: {loguniform: [1.0e-6, 1.0e-2]}
      run.batch_size: {choice: [16, 32, 64]}
      noise:
        key: null                # sets nothing itself; only gates its children
        choice:
          - value: false
            set: {rule.noise: null}
          - value: true
            parameters:
              sigma: {key: rule.noise.stddev, uniform: [0.1, 1.0]}

    warm_start:                  # points queued before TPE's first suggestion
      - {run.alignment_lr: 1.0e-3, run.batch_size: 64, noise: true, sigma: 0.8,
         rule.weights.null: 1.0e-6}

Distributions: ``uniform: [low, high]``, ``loguniform: [low, high]``, ``int: [low, high]``
(inclusive), ``choice: [option, ...]`` where an option is a scalar or ``{value, set, parameters}``.
Every error names the node it is about (``parameters.noise.choice[1].parameters.sigma``).
The base preset is mapped onto the budget as a search trial is (``Budget.run``: the budget's
epochs, schedule, standard batch and learning-rate rule), then ``fixed`` applies; batch sizes the
space lists are taken as written, with the learning rate linear in them. A warm start is checked
like any sample: every active parameter, in range, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localrules.config import TrialConfig, set_keys
from localrules.rules.presets import PRESETS
from localrules.rules.spec import Noise
from localrules.spaces.budget import Budget
from localrules.spaces.nodes import Choice, IntUniform, LogUniform, Node, Option, Uniform, walk
from localrules.spaces.space import Space
from localrules.validation import shown

DISTRIBUTIONS = {"uniform": Uniform, "loguniform": LogUniform, "int": IntUniform}
MAX_BYTES = 64 * 1024
"""A space file's size: PyYAML reads some tens of kilobytes a second on a busy machine, and a
space is a page of text (the paper's largest, written out, is about 2 KB)."""
MAX_DEPTH = 32
"""Nesting levels of a space file (a choice inside an option is four)."""
MAX_WARM_STARTS = 64
"""Points queued before TPE's first suggestion (each is checked like a sample)."""
MAX_NODES = 2000
"""YAML values in a space file, aliases counted as what they stand for (so a 'billion
laughs' file is refused while it is read, not expanded)."""
TOP_KEYS = ("name", "description", "base", "fixed", "parameters", "warm_start")
# The default config with its null section (rule.noise) filled, so keys under it are checked too.
_DEFAULT_CONFIG = set_keys(TrialConfig().to_dict(), {"rule.noise": Noise(0.0).to_dict()})


def _check_key(where: str, key: object) -> str:
    """A dotted config key that exists (checked by setting it on the default config)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: key must be a dotted config key such as run.batch_size, "
                         f"got {key!r}")
    if key == "seed":  # Space.config sets it per trial: a space's value would be dropped
        raise ValueError(f"{where}: 'seed' is set per trial from the search's seed (--seed), "
                         "not by a space")
    try:
        set_keys(_DEFAULT_CONFIG, {key: None})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return key


def _settings(where: str, data: object) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping of dotted config keys to values, "
                         f"got {type(data).__name__}")
    return {_check_key(f"{where}.{k}", k): v for k, v in data.items()}


def _parameters(where: str, data: object) -> tuple[Node, ...]:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{where} must be a non-empty mapping of parameter names to "
                         f"distributions, got {data!r}")
    return tuple(_node(f"{where}.{name}", name, spec) for name, spec in data.items())


def _node(where: str, name: object, spec: object) -> Node:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: parameter names must be non-empty strings, got {name!r}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping such as {{uniform: [0, 1]}}, got {spec!r}")
    kinds = [k for k in spec if k in (*DISTRIBUTIONS, "choice")]
    extra = [k for k in spec if k not in (*DISTRIBUTIONS, "choice", "key")]
    if extra:
        raise ValueError(f"{where}: unknown field {extra[0]!r}; valid: key, uniform, "
                         "loguniform, int, choice")
    if len(kinds) != 1:
        raise ValueError(f"{where} needs exactly one distribution (uniform, loguniform, int or "
                         f"choice), got {kinds or 'none'}")
    key = spec.get("key", name)
    if key is not None:
        key = _check_key(where, key)
    (kind,) = kinds
    try:
        if kind == "choice":
            return Choice(name, key, _options(f"{where}.choice", spec["choice"]))
        bounds = spec[kind]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError(f"{kind} needs [low, high], got {bounds!r}")
        return DISTRIBUTIONS[kind](name, key, *bounds)
    except ValueError as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: {err}") from None


def _options(where: str, data: object) -> tuple[Option, ...]:
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where} must be a non-empty list of options, got {data!r}")
    options = []
    for i, item in enumerate(data):
        at = f"{where}[{i}]"
        if isinstance(item, Mapping):
            extra = [k for k in item if k not in ("value", "set", "parameters")]
            if extra or "value" not in item:
                raise ValueError(f"{at}: an option mapping has 'value' and optionally 'set' and "
                                 f"'parameters', got {sorted(map(str, item))}")
            children = (_parameters(f"{at}.parameters", item["parameters"])
                        if "parameters" in item else ())
            options.append(Option(item["value"], children, _settings(f"{at}.set", item.get("set"))))
        else:
            options.append(Option(item))
    return tuple(options)


def _corners(nodes: tuple[Node, ...]) -> list[dict[str, Any]]:
    """Param sets that together visit every option of every choice, each with every other
    parameter at its lower and at its upper bound."""
    def pick(level: tuple[Node, ...], forced: dict[str, int], end: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for node in level:
            if isinstance(node, Choice):
                option = node.options[forced.get(node.name, 0)]
                params[node.name] = option.value
                params.update(pick(option.children, forced, end))
            else:
                params[node.name] = getattr(node, end)
        return params

    forcings: list[dict[str, int]] = [{}]
    for node in walk(nodes):
        if isinstance(node, Choice):
            for i in range(1, len(node.options)):
                # Reach the choice: force the options of its ancestors that contain it.
                forcings.append({**(_path_to(nodes, node.name) or {}), node.name: i})
    return [pick(nodes, forced, end) for forced in forcings for end in ("low", "high")]


def _path_to(nodes: tuple[Node, ...], name: str) -> dict[str, int] | None:
    for node in nodes:
        if node.name == name:
            return {}
        if isinstance(node, Choice):
            for i, option in enumerate(node.options):
                found = _path_to(option.children, name)
                if found is not None:
                    return {node.name: i, **found}
    return None


class SpaceTooLarge(ValueError):
    """A space file past ``MAX_BYTES``, ``MAX_DEPTH`` or ``MAX_NODES``."""


def _loader() -> type:
    """PyYAML's safe loader, reading ``1e-6`` as a number (YAML 1.2) rather than a string,
    refusing a mapping that repeats a key (PyYAML keeps the last one silently), and stopping
    at ``MAX_DEPTH`` levels or ``MAX_NODES`` values while it reads (before its recursive
    composer could reach Python's recursion limit, or a huge file be read to its end)."""
    import re

    import yaml
    from yaml.constructor import ConstructorError
    from yaml.events import AliasEvent
    from yaml.nodes import ScalarNode

    class Loader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = self.deepest = self.nodes = 0
            self.anchored: dict[str, tuple[int, int]] = {}
            """anchor → (values under it, its height): the cost of each alias to it."""

        def count(self, nodes: int, depth: int) -> None:
            self.nodes += nodes
            self.deepest = max(self.deepest, depth)
            line = self.peek_event().start_mark.line + 1
            if depth > MAX_DEPTH:
                raise SpaceTooLarge(f"nested more than {MAX_DEPTH} levels deep (line {line})")
            if self.nodes > MAX_NODES:
                raise SpaceTooLarge(f"too large: more than {MAX_NODES} values (line {line}; "
                                    "aliases count as what they stand for)")

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(AliasEvent):
                size, height = self.anchored.get(self.peek_event().anchor, (1, 0))
                self.count(size, self.depth + height)
                return super().compose_node(parent, index)
            anchor = getattr(self.peek_event(), "anchor", None)
            self.depth += 1
            before, outer_deepest, self.deepest = self.nodes, self.deepest, self.depth
            self.count(1, self.depth)
            try:
                node = super().compose_node(parent, index)
            finally:
                height = self.deepest - self.depth
                self.depth -= 1
                self.deepest = max(outer_deepest, self.deepest)
            if anchor is not None:
                self.anchored[anchor] = (self.nodes - before, height)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise ConstructorError("while reading a mapping", node.start_mark,
                                               f"found the key {shown(key)} twice",
                                               key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
    return Loader


def parse_space(text: str, budget: Budget, origin: str = "<space>") -> Space:
    """A Space from YAML text; ``origin`` (the file name) prefixes every error."""
    import yaml

    if not isinstance(text, str):
        raise ValueError(f"{origin}: a space is YAML text, got {type(text).__name__}")
    if len(text) > MAX_BYTES:
        raise ValueError(f"{origin}: the space file is {len(text)} characters; at most "
                         f"{MAX_BYTES} (a space file is a page of text)")
    try:
        data = yaml.load(text, Loader=_loader())
    except SpaceTooLarge as err:
        raise ValueError(f"{origin}: the space file is {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{origin}: malformed YAML{at}: {problem}") from None
    try:
        return _space(data, budget, origin, text)
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None


def _space(data: object, budget: Budget, origin: str, text: str) -> Space:
    if not isinstance(data, Mapping):
        raise ValueError(f"a space file is a mapping with 'parameters', got {type(data).__name__}")
    extra = [k for k in data if k not in TOP_KEYS]
    if extra:
        raise ValueError(f"unknown top-level key {extra[0]!r}; valid: {', '.join(TOP_KEYS)}")
    if "parameters" not in data:
        raise ValueError("the space has no 'parameters'")
    preset = data.get("base")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ValueError(f"base: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    # The base preset (or the default rule) on the budget, as a search trial trains it.
    start = budget.preset_config(preset or "bp")
    base: dict[str, Any] = {k: v for k, v in budget.settings().items()
                            if not k.startswith("run.")}
    base["run"] = start.run.to_dict()
    if preset is not None:
        base["rule"] = start.rule.to_dict()
    base.update(_settings("fixed", data.get("fixed")))
    nodes = _parameters("parameters", data["parameters"])
    name = data.get("name") or Path(origin).stem
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {description!r}")
    space = Space(name=name, nodes=nodes, base=base, budget=budget,
                  source={"yaml": text, "name": name}, description=description,
                  scales_batches=False, warm_starts=_warm_starts(data.get("warm_start")),
                  reading=PRESETS[preset].reading if preset is not None else "none")
    for params in _corners(nodes):
        space.config(params)
    return space


def _warm_starts(data: object) -> tuple[tuple[str, dict[str, Any]], ...]:
    """``warm_start``: a list of points, each a mapping of parameter names to values (checked
    against the space like any sample when the space is built)."""
    if data is None:
        return ()
    if not isinstance(data, list) or not 0 < len(data) <= MAX_WARM_STARTS:
        raise ValueError(f"warm_start must be a list of 1 to {MAX_WARM_STARTS} parameter "
                         f"mappings, got {shown(data)}")
    points = []
    for i, point in enumerate(data):
        if not isinstance(point, Mapping) or not point:
            raise ValueError(f"warm_start[{i}] must be a mapping of parameter names to values, "
                             f"got {point!r}")
        points.append((f"warm_start[{i}]", dict(point)))
    return tuple(points)


def load_space_file(path: str | Path, budget: Budget) -> Space:
    """A space from a file: a regular file of at most ``MAX_BYTES`` characters, checked before
    it is read (a named pipe would block, a huge file fill memory)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ValueError(f"cannot read space file {str(path)!r}: "
                             f"{'not a regular file' if path.exists() else 'no such file'}")
        if path.stat().st_size > 4 * MAX_BYTES:  # UTF-8: up to 4 bytes a character
            raise ValueError(f"{path}: the space file is {path.stat().st_size} bytes; at most "
                             f"{MAX_BYTES} characters (a space file is a page of text)")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read space file {str(path)!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read space file {str(path)!r}: not UTF-8 text "
                         f"(byte {err.start})") from None
    return parse_space(text, budget, origin=str(path))
