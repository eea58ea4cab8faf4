"""Small checks that turn bad input into one clear ValueError: what was wrong, what is valid.

Every user-facing edge (rule names, presets, configs, CLI flags) goes through these so that the
messages read the same everywhere and the CLI can map them to exit status 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


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
