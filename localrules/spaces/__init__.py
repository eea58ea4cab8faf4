"""Search spaces: the paper's four TPE searches and user spaces from YAML (hyperopt trees).

``load_space("ia", budget)`` or ``load_space("my-space.yaml", budget)`` gives a Space; a stored
experiment rebuilds its space with ``space_from_source(source, budget)``. Nothing here imports
TensorFlow; hyperopt is imported only when a hyperopt expression is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localrules.spaces.budget import DEFAULT_BUDGETS, Budget, default_budget
from localrules.spaces.paper import PAPER_SPACES, paper_space
from localrules.spaces.space import Space
from localrules.spaces.yaml_space import load_space_file, parse_space

__all__ = [
    "DEFAULT_BUDGETS",
    "PAPER_SPACES",
    "Budget",
    "Space",
    "default_budget",
    "load_space",
    "space_from_source",
]


def load_space(spec: str, budget: Budget) -> Space:
    """A paper space by name, or a user space from a ``.yaml``/``.yml`` file."""
    if spec in PAPER_SPACES:
        return paper_space(spec, budget)
    if isinstance(spec, str) and (spec.endswith((".yaml", ".yml")) or Path(spec).is_file()):
        return load_space_file(spec, budget)
    raise ValueError(f"unknown space {spec!r}; valid: {', '.join(PAPER_SPACES)}, "
                     "or a path to a .yaml space file")


def space_from_source(source: Mapping[str, Any], budget: Budget) -> Space:
    """Rebuild a stored experiment's space (``{"paper": name}`` or ``{"yaml": text}``)."""
    if "paper" in source:
        return paper_space(source["paper"], budget)
    if "yaml" in source:
        return parse_space(source["yaml"], budget, origin=source.get("name", "stored-space"))
    raise ValueError(f"a stored space source has 'paper' or 'yaml', got {sorted(source)}")
