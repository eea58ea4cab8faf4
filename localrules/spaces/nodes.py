"""The parameter tree of a search space: distributions, and choices whose options gate children.

Paper spaces and YAML spaces are both written as this tree. It compiles to a hyperopt expression
(so TPE sees the conditional structure), and it decodes hyperopt's ``vals`` (label → [value] or [])
into flat ``params`` (name → value of the *active* parameters, choices as their option values, not
indices) and back. Params are what the store keeps, reports show and users read; ``idxs``/``vals``
are what rebuilds TPE's history exactly.

No hyperopt import at module level: building a tree, validating and decoding params need none.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from localrules.validation import Limit, check_finite, shown

Scalar = bool | int | float | str | None

BOUND = Limit(-1e15, 1e15)
"""A distribution's bounds: finite, and far enough from float's range that ``high - low`` and
hyperopt's draws stay finite (the paper spaces reach 1e7)."""
MAX_PARAMETERS = 256
"""Parameters in one space, branches included (the paper's largest search has about 20)."""
MAX_OPTIONS = 256
"""Options of all the choices of one space together: building a space checks a config for
every one of them (``yaml_space._corners``), so this bounds the time that takes."""


def _check_bounds(where: str, low: object, high: object, positive: bool = False) -> None:
    for bound in (low, high):
        try:
            BOUND.check("bound", bound)
        except ValueError:
            raise ValueError(f"{where}: bounds must be numbers in [-1e+15, 1e+15], got "
                             f"[{shown(low)}, {shown(high)}]") from None
    if not low < high:
        raise ValueError(f"{where}: the lower bound must be below the upper, got [{low}, {high}]")
    if positive and low <= 0:
        raise ValueError(f"{where}: log-uniform bounds must be > 0, got [{low}, {high}]")


@dataclass(frozen=True)
class Node:
    """One named parameter. ``key`` is the config key it sets (dotted), or None for a parameter
    that only gates children or feeds a derived value."""

    name: str
    key: str | None = None

    def to_hyperopt(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, where: str, value: object) -> Scalar:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Node):
    low: float = 0.0
    high: float = 1.0

    TOLERANCE: ClassVar[float] = 0.0
    """Relative slack when checking a value against the bounds."""

    def __post_init__(self) -> None:
        _check_bounds(f"parameter {self.name!r}", self.low, self.high)

    def to_hyperopt(self) -> Any:
        from hyperopt import hp

        return hp.uniform(self.name, self.low, self.high)

    def check(self, where: str, value: object) -> float:
        slack = self.TOLERANCE
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not self.low * (1 - slack) <= value <= self.high * (1 + slack):
            raise ValueError(f"{where} must be a number in [{self.low:g}, {self.high:g}], "
                             f"got {value!r}")
        return float(value)

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform(Uniform):
    low: float = 1e-3
    high: float = 1.0

    TOLERANCE: ClassVar[float] = 1e-9
    """hyperopt draws exp(uniform(log low, log high)), which may land a few ulps outside."""

    def __post_init__(self) -> None:
        _check_bounds(f"parameter {self.name!r}", self.low, self.high, positive=True)

    def to_hyperopt(self) -> Any:
        from hyperopt import hp

        return hp.loguniform(self.name, math.log(self.low), math.log(self.high))

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntUniform(Node):
    """An integer drawn uniformly from ``low``..``high`` inclusive."""

    low: int = 0
    high: int = 1

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise ValueError(f"parameter {self.name!r}: int bounds must be integers, "
                                 f"got [{self.low!r}, {self.high!r}]")
        _check_bounds(f"parameter {self.name!r}", self.low, self.high)

    def to_hyperopt(self) -> Any:
        from hyperopt import hp

        # hp.uniformint rounds a uniform draw, which halves the chance of both end values;
        # quantising [low − ½, high + ½] gives every integer the same chance, and TPE still
        # models the parameter as ordered (unlike hp.randint).
        return hp.quniform(self.name, self.low - 0.5, self.high + 0.5, 1)

    def check(self, where: str, value: object) -> int:
        if isinstance(value, float) and value.is_integer():
            # quniform's rounding can land on low − ½ + ε → low, or exactly on an end ± ½.
            value = min(max(int(value), self.low), self.high)
        if isinstance(value, bool) or not isinstance(value, int) \
                or not self.low <= value <= self.high:
            raise ValueError(f"{where} must be an integer in [{self.low}, {self.high}], "
                             f"got {value!r}")
        return value

    def describe(self) -> str:
        return f"integer {self.low}..{self.high}"


@dataclass(frozen=True)
class Option:
    """One option of a choice: its value, fixed config settings it implies, and the parameters
    that exist only when it is chosen."""

    value: Scalar
    children: tuple[Node, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Choice(Node):
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError(f"choice {self.name!r} needs at least one option")
        values = [o.value for o in self.options]
        for v in values:
            if not isinstance(v, (bool, int, float, str, type(None))):
                raise ValueError(f"choice {self.name!r}: option values must be numbers, strings, "
                                 f"booleans or null, got {shown(v)}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                check_finite(f"choice {self.name!r}: option value", v)
        if len({(type(v), v) for v in values}) != len(values):
            raise ValueError(f"choice {self.name!r} lists an option twice: {values}")

    def to_hyperopt(self) -> Any:
        from hyperopt import hp

        return hp.choice(self.name, [
            {"option": i, **{c.name: c.to_hyperopt() for c in o.children}}
            for i, o in enumerate(self.options)
        ])

    def index(self, where: str, value: object) -> int:
        for i, o in enumerate(self.options):
            # bool is an int in Python: match types too, so True never picks the option 1.
            if type(o.value) is type(value) and o.value == value:
                return i
            if isinstance(o.value, float) and isinstance(value, int) \
                    and not isinstance(value, bool) and o.value == value:
                return i
        raise ValueError(f"{where} must be one of {[o.value for o in self.options]}, "
                         f"got {value!r}")

    def check(self, where: str, value: object) -> Scalar:
        return self.options[self.index(where, value)].value

    def describe(self) -> str:
        return "choice {" + ", ".join(_fmt(o.value) for o in self.options) + "}"


def _fmt(value: Scalar) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def walk(nodes: Sequence[Node]) -> Iterator[Node]:
    """Every node of the tree, parents before their children."""
    for node in nodes:
        yield node
        if isinstance(node, Choice):
            for option in node.options:
                yield from walk(option.children)


def check_tree(nodes: Sequence[Node]) -> None:
    """Names are hyperopt labels: unique over the whole tree, non-empty strings. The tree is
    at most ``MAX_PARAMETERS`` parameters and ``MAX_OPTIONS`` options, and no config key is set
    twice by parameters (or chosen options) that can be active together."""
    seen: set[str] = set()
    options = 0
    for node in walk(nodes):
        if not isinstance(node.name, str) or not node.name:
            raise ValueError(f"parameter names must be non-empty strings, got {shown(node.name)}")
        if node.name in seen:
            raise ValueError(f"parameter {node.name!r} appears twice in the space; names are "
                             "unique over the whole tree, branches included")
        seen.add(node.name)
        if len(seen) > MAX_PARAMETERS:
            raise ValueError(f"the space has more than {MAX_PARAMETERS} parameters")
        options += len(node.options) if isinstance(node, Choice) else 0
        if options > MAX_OPTIONS:
            raise ValueError(f"the space's choices have more than {MAX_OPTIONS} options in all")
    _check_writers(nodes)


def _writers(nodes: Sequence[Node], path: tuple[tuple[str, int], ...] = ()
             ) -> Iterator[tuple[str, str, tuple[tuple[str, int], ...]]]:
    """(config key, what sets it, the choices and options on its way) for every parameter's
    key and every option's settings."""
    for node in nodes:
        if node.key is not None:
            yield node.key, f"parameter {node.name!r}", path
        if isinstance(node, Choice):
            for i, option in enumerate(node.options):
                inner = (*path, (node.name, i))
                for key in option.settings:
                    yield key, f"option {_fmt(option.value)} of {node.name!r}", inner
                yield from _writers(option.children, inner)


def _exclusive(a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...]) -> bool:
    """Whether two places in the tree are never active together: they take different options of
    one choice on their way down."""
    for (choice_a, option_a), (choice_b, option_b) in zip(a, b, strict=False):
        if choice_a != choice_b:
            return False
        if option_a != option_b:
            return True
    return False


def _check_writers(nodes: Sequence[Node]) -> None:
    by_key: dict[str, list[tuple[str, tuple[tuple[str, int], ...]]]] = {}
    for key, who, path in _writers(nodes):
        for other, other_path in by_key.get(key, ()):
            if not _exclusive(path, other_path):
                raise ValueError(f"{other} and {who} both set config key {key!r}; one "
                                 "parameter (or chosen option) per key")
        by_key.setdefault(key, []).append((who, path))


def to_hyperopt(nodes: Sequence[Node]) -> dict[str, Any]:
    """The hyperopt expression of the tree (a dict of labelled distributions)."""
    return {node.name: node.to_hyperopt() for node in nodes}


def active(
    nodes: Sequence[Node], params: Mapping[str, Any]
) -> Iterator[tuple[Node, Option | None]]:
    """The nodes active under ``params`` with, for choices, the chosen option (params checked)."""
    for node in nodes:
        if node.name not in params:
            raise ValueError(f"parameter {node.name!r} is active but has no value")
        if isinstance(node, Choice):
            option = node.options[node.index(f"parameter {node.name!r}", params[node.name])]
            yield node, option
            yield from active(option.children, params)
        else:
            node.check(f"parameter {node.name!r}", params[node.name])
            yield node, None


def check_params(nodes: Sequence[Node], params: Mapping[str, Any]) -> dict[str, Scalar]:
    """Params checked against the tree: every active parameter present and in range, and no
    parameter that is unknown or inactive. Values come back normalised (ints as ints)."""
    out = {node.name: node.check(f"parameter {node.name!r}", params[node.name])
           for node, _ in active(nodes, params)}
    names = {n.name for n in walk(nodes)}
    for name in params:
        if name not in out:
            what = "inactive under the chosen options" if name in names else "not in the space"
            raise ValueError(f"parameter {name!r} is {what}; active: {', '.join(out)}")
    return out


def params_from_vals(nodes: Sequence[Node], vals: Mapping[str, Sequence[Any]]) -> dict[str, Scalar]:
    """Flat params from hyperopt's ``vals`` (label → [value] when active, [] when not)."""
    out: dict[str, Scalar] = {}

    def visit(level: Sequence[Node]) -> None:
        for node in level:
            got = vals.get(node.name) or []
            if len(got) != 1:
                raise ValueError(f"hyperopt vals hold {len(got)} values for active parameter "
                                 f"{node.name!r}; expected 1")
            if isinstance(node, Choice):
                option = node.options[int(got[0])]
                out[node.name] = option.value
                visit(option.children)
            else:
                out[node.name] = node.check(f"parameter {node.name!r}", plain(got[0]))

    visit(nodes)
    return out


def vals_from_params(nodes: Sequence[Node], params: Mapping[str, Any]) -> dict[str, list[Any]]:
    """hyperopt's ``vals`` for params: every label of the tree, [] where inactive."""
    vals: dict[str, list[Any]] = {n.name: [] for n in walk(nodes)}
    for node, _option in active(nodes, params):
        if isinstance(node, Choice):
            # By value and type (Choice.index), not Option equality: Option(0) == Option(False).
            vals[node.name] = [node.index(f"parameter {node.name!r}", params[node.name])]
        else:
            vals[node.name] = [node.check(f"parameter {node.name!r}", params[node.name])]
    return vals


def plain(value: Any) -> Any:
    """numpy scalars from hyperopt as Python numbers, so params are plain JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
