"""Strict JSON values from training numbers: NaN and ±Inf become None.

A diverged run's losses are NaN or infinite, which JSON cannot hold; history lines, progress and
result documents must all be strict JSON (every store backend refuses anything else). This is the
one place that turns such values into ``null``. Standard library only, at the bottom of the
package, so the run layout, the trainer, the store, the worker and the Ray engine can all use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, through mappings, lists and
    tuples (tuples come back as lists, as JSON has them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
