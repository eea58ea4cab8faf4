"""Small checks that turn bad input into one clear ValueError: what was wrong, what is valid.

Every user-facing edge (rule names, presets, configs, CLI flags) goes through these so that the
messages read the same everywhere and the CLI can map them to exit status 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


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
        raise ValueError(f"unknown {what} {value!r}; valid: {_listing(valid)}")
    return value


def check_keys(what: str, mapping: Mapping[str, object], valid: Iterable[str]) -> None:
    """Raise if ``mapping`` has a key outside ``valid`` (names the first bad key)."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(mapping).__name__}")
    valid = set(valid)
    for key in mapping:
        if key not in valid:
            raise ValueError(f"unknown {what} {key!r}; valid: {_listing(valid)}")


def check_finite(what: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def check_nonnegative(what: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number ≥ 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and value >= 0:
        return float(value)
    raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")


def check_bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def check_int(what: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def check_str(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


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
    if hint is int:
        return check_int(what, value)
    if hint is float:
        return check_finite(what, value)
    if hint is str:
        return check_str(what, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{what} must be a list, got {value!r}")
        (item, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(f"{what}[{i}]", item, v) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{what} must be a mapping, got {value!r}")
        from_dict = getattr(hint, "from_dict", None)
        return from_dict(value) if from_dict else dataclass_from_dict(hint, value, what)
    return value
