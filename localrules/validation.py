"""Small checks that turn bad input into one clear ValueError: what was wrong, what is valid.

Every user-facing edge (rule names, presets, configs, CLI flags) goes through these so that the
messages read the same everywhere and the CLI can map them to exit status 2.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_SAFE_INT = 2**53 - 1
"""The ceiling of every integer check: exact as a JSON number, as a float and as a signed 64-bit
integer (SQLite, BSON), so no value that passes a check can overflow a store or a reader."""

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 3, 60, 60, 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 6


def shown(value: object) -> str:
    """``repr(value)`` cut to a readable length, safe for any input: a nesting bomb, a
    10,000-digit integer or a megabyte string never makes an error message fail or flood."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        return _SHOW.repr(value)
    except Exception:  # a hostile __repr__; the type is still worth naming
        return f"<{type(value).__name__}>"


class ParameterError(ValueError):
    """A bad value of one named parameter of a Python API (``resources``, ``max_failures``).

    The library names the parameter; the CLI, which knows which flag set it, names the flag
    instead (``cli.main``), so only the CLI speaks of flags."""

    def __init__(self, parameter: str, detail: str) -> None:
        self.parameter = parameter
        self.detail = detail
        super().__init__(parameter, detail)  # both: it pickles (across processes, Ray)

    def __str__(self) -> str:
        return self.naming(self.parameter)

    def naming(self, name: str) -> str:
        """The message naming ``name`` (a flag): at the detail's ``{}``, else before it."""
        return self.detail.replace("{}", name, 1) if "{}" in self.detail \
            else f"{name}: {self.detail}"


def _listing(valid: Iterable[str]) -> str:
    return ", ".join(sorted(valid))


def check_choice(what: str, value: object, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise naming both."""
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {what} {shown(value)}; valid: {_listing(valid)}")
    return value


def check_keys(what: str, mapping: Mapping[str, object], valid: Iterable[str]) -> None:
    """Raise if ``mapping`` has a key outside ``valid`` (names the first bad key)."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(mapping).__name__}")
    valid = set(valid)
    for key in mapping:
        if key not in valid:
            raise ValueError(f"unknown {what} {shown(key)}; valid: {_listing(valid)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    """Finite, and (for an int) small enough to be a float: never an OverflowError."""
    if isinstance(value, int):
        return abs(value) <= MAX_SAFE_INT
    return math.isfinite(value)


def check_finite(what: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number (an int beyond ``MAX_SAFE_INT`` is
    not: it would lose digits or overflow)."""
    if not _is_number(value):
        raise ValueError(f"{what} must be a number, got {shown(value)}")
    if not _finite(value):
        raise ValueError(f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def check_nonnegative(what: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number ≥ 0."""
    if _is_number(value) and _finite(value) and value >= 0:
        return float(value)
    raise ValueError(f"{what} must be a finite number >= 0, got {shown(value)}")


def check_bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {shown(value)}")
    return value


def check_int(what: str, value: object, minimum: int | None = -MAX_SAFE_INT,
              maximum: int | None = MAX_SAFE_INT) -> int:
    """Return ``value`` if it is an int (not a bool) in [``minimum``, ``maximum``] (by default
    ±``MAX_SAFE_INT``; None: no bound, for a caller whose own ``Limit`` follows)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be <= {maximum}, got {shown(value)}")
    return value


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,30}")
_REAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


@dataclass(frozen=True)
class Limit:
    """The valid range of one kind of number: the one way numeric limits are declared.

    Config fields, search settings, worker parameters and command-line flags of the same
    quantity share one ``Limit`` (``EPOCHS``, ``SEED``, …), so ``--epochs`` and a stored
    ``run.epochs`` are refused by the same words. Every limit is finite, which is what keeps
    NaN, ±inf and integers past SQLite, BSON or numpy out of everything downstream.
    """

    minimum: float
    maximum: float
    integer: bool = False
    low_open: bool = False
    """The minimum itself is excluded (``(0, 1]``)."""
    high_open: bool = False

    def describe(self) -> str:
        """``an integer in [1, 10000]``, ``a number in (0, 604800]``."""
        kind, low, high = ("an integer", f"{self.minimum:.0f}", f"{self.maximum:.0f}") \
            if self.integer else ("a number", f"{self.minimum:g}", f"{self.maximum:g}")
        return (f"{kind} in {'(' if self.low_open else '['}{low}, {high}"
                f"{')' if self.high_open else ']'}")

    def contains(self, value: float) -> bool:
        low = value > self.minimum if self.low_open else value >= self.minimum
        high = value < self.maximum if self.high_open else value <= self.maximum
        return low and high

    def check(self, what: str, value: object) -> int | float:
        """``value`` if it is a number of this kind inside the limit (a float for a real
        limit); otherwise a ValueError naming ``what`` and the valid range."""
        if self.integer:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = _is_number(value) and _finite(value)
        if not ok or not self.contains(value):
            raise ValueError(f"{what} must be {self.describe()}, got {shown(value)}")
        return value if self.integer else float(value)

    def check_parameter(self, parameter: str, value: object) -> int | float:
        """``check`` of a named API parameter: a ``ParameterError``, which the CLI turns into
        a message naming the flag that set it."""
        try:
            return self.check("{}", value)
        except ValueError as err:
            raise ParameterError(parameter, str(err)) from None

    def parse(self, what: str, text: str) -> int | float:
        """A value typed on a command line: plain ASCII decimal (no ``nan``, ``inf``, ``0x10``,
        ``1_000`` or other scripts' digits), then ``check``."""
        pattern = _INT_TEXT if self.integer else _REAL_TEXT
        if isinstance(text, str) and pattern.fullmatch(text.strip()):
            value = int(text) if self.integer else float(text)
            if (self.integer or math.isfinite(value)) and self.contains(value):
                return value
        raise ValueError(f"{what} must be {self.describe()}, got {shown(text)}")


DAY = 24 * 3600.0
SEED = Limit(0, 2**32 - 1, integer=True)
"""Seeds: numpy's and hyperopt's random states take 32 bits."""
EPOCHS = Limit(1, 10_000, integer=True)
"""Epochs of a run (the paper's longest: 100, twice that in steps under alternation)."""
EPOCH_TIME = Limit(0, 10_000)
"""A point or span in epochs, possibly fractional: warmup, drops, delay."""
BATCH_SIZE = Limit(1, 2**20, integer=True)
"""Examples per step (the paper's largest: 4096)."""
WIDTH = Limit(1, 4096, integer=True)
"""Channels of a model's first group (ResNet's 64)."""
IMAGE_SIZE = Limit(8, 4096, integer=True)
"""The image side a model sees (ImageNet v2 models: 299)."""
MAGNITUDE = Limit(0, 1e12)
"""A non-negative real knob: learning rates, primitive weights (paper spaces reach 2e9),
noise, variances, weight decay."""
TRIALS = Limit(1, 1_000_000, integer=True)
"""Counts of trials (a search's, a worker's, TPE's startup trials and EI candidates)."""
REPLICATES = Limit(1, 1000, integer=True)
"""Small repeat counts: reference seeds, reservation attempts, bootstrap resamples."""
WORKERS = Limit(0, 256, integer=True)
"""Local worker processes."""
INTERVAL = Limit(0, 7 * DAY, low_open=True)
"""Seconds of a lease, a poll or a heartbeat: positive, at most a week (a thread's wait takes
no more, and a lease of ``inf`` would never expire)."""
DURATION = Limit(0, 365 * DAY)
"""Seconds that may be 0 (idle time before a worker exits)."""
TRIAL_ID = Limit(0, 2**31 - 1, integer=True)
"""A trial's id in its experiment."""


def check_str(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {shown(value)}")
    return value


JSON_DEPTH = 32
JSON_ITEMS = 10_000


def check_json(what: str, value: object, *, mapping: bool = False, numbers: bool = True,
               depth: int = JSON_DEPTH, items: int | None = JSON_ITEMS,
               string_keys: bool = True) -> object:
    """``value`` if it is plain JSON data a store can keep and a reader can walk: finite numbers
    (ints within ``MAX_SAFE_INT``), at most ``depth`` levels and ``items`` values (None: any
    number), walked without recursion, so a nesting bomb is refused, not followed. Keys are
    strings (``string_keys=False``: also numbers and null, which ``json.dumps`` writes as
    strings). ``mapping``: the top level must be a mapping; ``numbers=False``: the shape only
    (the numbers are left to the checks of the fields they go to, which name their range)."""
    if mapping and not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {shown(value)}")
    keys = (str,) if string_keys else (str, int, float, type(None))
    # Walked on every stored document a store reads or writes: plain types are tested first
    # (cheap), and an item's path is kept as (parent path, key) and spelt out only for an error.
    stack: list[tuple[object, int, object]] = [(value, 0, None)]
    seen = 0
    while stack:
        item, level, path = stack.pop()
        seen += 1
        if items is not None and seen > items:
            raise ValueError(f"{what} holds more than {items} values")
        kind = type(item)
        if item is None or kind is str or kind is bool:
            continue
        if kind is int or kind is float:
            if numbers and not (-MAX_SAFE_INT <= item <= MAX_SAFE_INT if kind is int
                                else math.isfinite(item)):
                check_finite(_spelt(what, path), item)
            continue
        if level >= depth:
            raise ValueError(f"{what} is nested more than {depth} levels deep")
        if kind is dict or isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, keys):
                    raise ValueError(f"{_spelt(what, path)} keys must be strings, got "
                                     f"{shown(key)}")
                stack.append((child, level + 1, (path, f".{key}")))
        elif kind is list or kind is tuple or isinstance(item, (list, tuple)):
            stack.extend((child, level + 1, (path, f"[{i}]")) for i, child in enumerate(item))
        elif isinstance(item, (str, bool)):
            continue
        elif isinstance(item, (int, float)):
            if numbers:
                check_finite(_spelt(what, path), item)
        else:
            raise ValueError(f"{_spelt(what, path)} must be JSON data (null, true/false, a "
                             f"number, a string, a list or a mapping), got {type(item).__name__}")
    return value


def _spelt(what: str, path: object) -> str:
    """``what.key[3]`` from a ``check_json`` path of nested (parent, step) pairs."""
    steps = []
    while path is not None:
        path, step = path  # type: ignore[misc]
        steps.append(step)
    return what + "".join(reversed(steps))


def dataclass_from_dict(cls: type, data: Mapping[str, object], what: str) -> object:
    """Build the dataclass ``cls`` from JSON-like ``data``, checking keys and simple field types.

    Handles ``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[int, ...]`` and nested
    dataclasses (through their own ``from_dict`` when they have one). Anything the type check lets
    through is still validated by the dataclass's ``__post_init__``.
    """
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(f"{what} key", data, fields)
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(f"{what}.{name}", hints[name], value) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(what: str, hint: object, value: object) -> object:
    import dataclasses
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(what, inner, value)
    if hint is bool:
        return check_bool(what, value)
    if hint is int:  # the type only: the dataclass checks the range with its field's Limit
        return check_int(what, value, minimum=None, maximum=None)
    if hint is float:
        return check_finite(what, value)
    if hint is str:
        return check_str(what, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{what} must be a list, got {shown(value)}")
        (item, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(f"{what}[{i}]", item, v) for i, v in enumerate(value))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return check_json(what, value, mapping=True)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{what} must be a mapping, got {shown(value)}")
        from_dict = getattr(hint, "from_dict", None)
        return from_dict(value) if from_dict else dataclass_from_dict(hint, value, what)
    return value
