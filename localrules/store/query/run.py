"""A query against a store: check it, ask the backend per experiment and group, merge.

``TrialStore.select`` and ``TrialStore.query`` are this module's two entry points; a backend
provides three reads (``query_kinds``, ``query_fields``, ``query_trials``) and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localrules.store.documents import Experiment, Trial
from localrules.store.frame import BASE_COLUMNS, FIDELITY_COLUMNS, TIME_COLUMNS
from localrules.store.query.fields import (
    EVERYTHING,
    GAP_CLOSED,
    Atom,
    Bound,
    Catalog,
    Constant,
    bind,
    canonical,
    is_dynamic,
    named_fields,
)
from localrules.store.query.plan import (
    SCORES,
    Order,
    for_experiment,
    groups,
    merge,
    sort_for_experiment,
)
from localrules.store.references import References, references_of, requested_references

if TYPE_CHECKING:
    from localrules.store.base import TrialStore

REFERENCE_RUNS = Atom("reference", "exists", None, None)
FRAME_COLUMNS = (*BASE_COLUMNS, "reference", "warm_start", *FIDELITY_COLUMNS, "gap_closed",
                 "progress.epoch", *TIME_COLUMNS)
"""The columns every row of a query has (``store.frame.trial_row``), besides params/result."""


@dataclass(frozen=True)
class Selection:
    """The trials a query selected, in its order, with each experiment and its references
    (which give gap closed)."""

    trials: list[Trial]
    experiments: dict[str, Experiment]
    references: dict[str, References]
    columns: tuple[str, ...] | None = None


def with_states(where: str | None, states: Sequence[str]) -> str | None:
    """A filter and a set of states together (``localrules trials --where … --state …``, the
    dashboard's filter field and state boxes)."""
    if not states:
        return where
    chosen = f"state in ({', '.join(dict.fromkeys(states))})"
    return chosen if where is None else f"({where}) and {chosen}"


def experiment_names(experiments: str | Sequence[str]) -> list[str]:
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("a query names at least one experiment (a name or a list of names)")
    return list(dict.fromkeys(names))


def check_columns(columns: Sequence[str], catalog: Catalog) -> tuple[str, ...]:
    """The frame columns asked for (``result.gap_closed`` is the ``gap_closed`` column);
    ValueError naming the valid ones."""
    if isinstance(columns, str) or not columns:
        raise ValueError("columns: give a list of column names")
    out = []
    for column in columns:
        name = "gap_closed" if column == GAP_CLOSED else column
        known = name in FRAME_COLUMNS or (is_dynamic(name) and catalog.kinds_of(name))
        if not isinstance(name, str) or not known:
            raise ValueError(f"unknown column {column!r}; valid: {', '.join(FRAME_COLUMNS)}, "
                             f"and these experiments' {catalog.valid_dynamic()}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def select(store: TrialStore, experiments: str | Sequence[str], where: str | None = None,
           sort: str | None = None, reverse: bool = False, limit: int | None = None,
           columns: Sequence[str] | None = None, offset: int = 0) -> Selection:
    """The trials of ``experiments`` that pass ``where``, sorted by ``sort`` (by experiment
    and trial id without it; scores best first, ``reverse`` flips), the first ``offset``
    skipped, at most ``limit``.

    Within one experiment the database skips: whole groups of the order (``plan.groups``) by
    their count, then rows inside the group where the page begins. Across experiments the
    order is made by merging, so the first ``offset + limit`` are read and the page cut."""
    names = experiment_names(experiments)
    found = {name: store.require_experiment(name) for name in names}
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise ValueError(f"{name}: a count >= 0, got {value!r}")
    order = Order.of(sort, reverse) if sort is not None else None
    asked = named_fields(where) if where is not None else []
    asked += [canonical(c) for c in columns or () if is_dynamic(canonical(c))]
    check_order = order is not None and is_dynamic(order.field) and order.field not in SCORES
    if check_order:  # a score needs no reading: absent, it sorts last
        asked.append(order.field)
    kinds = store.query_kinds(names, list(dict.fromkeys(asked))) if asked else {}
    catalog = Catalog(kinds, lambda: store.query_fields(names))
    node: Bound = EVERYTHING if where is None else bind(where, catalog)
    if check_order and not catalog.kinds_of(order.field):
        raise ValueError(f"unknown sort key {sort!r}: no trial of {', '.join(names)} has it; "
                         f"these experiments have {catalog.valid_dynamic()}")
    checked = check_columns(columns, catalog) if columns is not None else None
    references = {name: references_of(store.query_trials(name, REFERENCE_RUNS),
                                      requested_references(found[name])) for name in names}
    single = len(names) == 1
    skip = offset if single else 0  # rows the database skips
    wanted = limit if limit is None or single else offset + limit  # rows it returns
    parts = []
    for rank, (group, group_order) in enumerate(groups(node, order)):
        if wanted is not None and sum(len(trials) for _, trials, _ in parts) >= wanted:
            break  # every later group's trials come after these
        for name in names:
            where_here = for_experiment(group, references[name])
            if where_here == Constant(False):
                continue
            if skip:
                count = store.query_count(name, where_here)
                if count <= skip:  # the page begins after this group
                    skip -= count
                    continue
            trials = store.query_trials(name, where_here, sort_for_experiment(group_order),
                                        wanted, skip)
            skip = 0
            parts.append((rank, trials, references[name]))
    merged = merge(parts, order, names, wanted)
    if not single and offset:
        merged = merged[offset:]
    return Selection(merged, found, references, checked)
