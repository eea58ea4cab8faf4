"""From a query (experiments, filter, order, limit) to what each backend is asked.

A filter is bound once (``fields.bind``) and then made concrete per experiment: a gap closed
becomes a comparison of the full-budget objective with the experiment's own threshold (or
false without references). An order is split into groups, each a filter the database sorts and
cuts to the limit by itself: by a score (objective, top-1, top-5, gap closed) the full-budget
results come first, then rung results (a trial paused at a lower rung is never ranked among
them), then trials without the value; by any other field, trials with a value, then those
without. Results of several experiments are merged in Python in the same order (group, value,
then experiment as given, then trial id), so the database never returns more than ``limit``
trials per experiment and group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localrules.store.documents import Trial, full_budget_trial
from localrules.store.query.fields import (
    BOOL,
    GAP_CLOSED,
    NUMBER,
    STATIC,
    STRING,
    AllOf,
    Atom,
    Bound,
    Constant,
    all_of,
    canonical,
    is_dynamic,
    kind_of,
    specialise,
)
from localrules.store.references import References

SCORES = frozenset({"result.objective", "result.top1", "result.top5", GAP_CLOSED})
"""Fields sorted best (highest) first, with full-budget results ahead of rung results."""
FULL = Atom("full_budget", "==", True, BOOL)
NOT_FULL = Atom("full_budget", "==", False, BOOL)
_RANK = {NUMBER: 0, STRING: 1, BOOL: 2}
DERIVED_BOOLEANS = ("full_budget", "is_reference")
"""Fields computed from several stored ones: filters only, never a sort key."""


@dataclass(frozen=True)
class Order:
    """Sort by ``field`` (canonical), ``descending`` or not; ties by trial id."""

    field: str
    descending: bool

    @classmethod
    def of(cls, key: str, reverse: bool = False) -> Order:
        """The order ``--sort key [--reverse]`` asks for: scores best first."""
        field = check_sort_field(key)
        return cls(field, (field in SCORES) != reverse)


def check_sort_field(key: object) -> str:
    """The canonical field to sort by; ValueError naming the valid keys."""
    field = canonical(key) if isinstance(key, str) else None
    sortable = field in STATIC and field not in DERIVED_BOOLEANS
    if field is None or not (sortable or field == GAP_CLOSED or is_dynamic(field)):
        shown = repr(key) if isinstance(key, str) else type(key).__name__
        others = ", ".join(f for f in STATIC if f != "trial_id" and f not in DERIVED_BOOLEANS)
        raise ValueError(f"unknown sort key {shown}; valid: trial_id, objective, top1, top5, "
                         f"gap_closed, rung, trial_epochs, params.NAME, result.NAME, {others}")
    return field


def for_experiment(node: Bound, references: References) -> Bound:
    """The filter for one experiment: its gap-closed comparisons made objective thresholds
    (``fa + value·(bp − fa)``, full-budget results only), or false without both references."""

    def replace(atom: Atom) -> Bound:
        if atom.field != GAP_CLOSED:
            return atom
        if references.gap_reason() is not None:
            return Constant(atom.op == "absent")
        if atom.op in ("exists", "absent"):
            return FULL if atom.op == "exists" else NOT_FULL
        fa, gap = references.levels["fa"].objective, references.gap

        def threshold(value: Any) -> float:
            return fa + value * gap

        value = (tuple(threshold(v) for v in atom.value) if atom.op in ("in", "not in")
                 else threshold(atom.value))
        return all_of([FULL, Atom("result.objective", atom.op, value, NUMBER)])

    return specialise(node, replace)


def sort_for_experiment(order: Order | None) -> Order | None:
    """The order a database sorts one experiment's trials by: a gap closed by the objective
    (the same order: ``(objective − fa) / (bp − fa)`` with bp above fa)."""
    if order is not None and order.field == GAP_CLOSED:
        return Order("result.objective", order.descending)
    return order


def groups(node: Bound, order: Order | None) -> list[tuple[Bound, Order | None]]:
    """The filters whose results follow one another in ``order``, each with the order the
    database sorts it by (none for the trials without the value: by trial id)."""
    if order is None:
        return [(node, None)]
    exists = Atom(order.field, "exists", None, None)
    absent = Atom(order.field, "absent", None, None)
    if order.field in SCORES:
        present = [all_of([node, FULL, exists]), all_of([node, NOT_FULL, exists])]
    else:
        present = [all_of([node, exists])]
    parts = [(g, order) for g in present] + [(all_of([node, absent]), None)]
    return [(g, o) for g, o in parts if not (isinstance(g, Constant) and not g.value)]


def field_value(trial: Trial, field: str, references: References | None = None) -> Any:
    """A trial's value of a field, as the filter compares it (None: absent)."""
    if field == "full_budget":
        return full_budget_trial(trial)
    if field == "is_reference":
        return isinstance(field_value(trial, "reference"), str)
    if field == "reference":
        value = (trial.reference or {}).get("rule") if isinstance(trial.reference, Mapping) \
            else None
    elif field == GAP_CLOSED:
        value = None if references is None else references.result_gap_closed(trial.result)
    elif field in STATIC:
        value = getattr(trial, field)
    else:
        prefix, key = field.split(".", 1)
        doc = trial.params if prefix == "params" else trial.result
        value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if kind_of(value) is not None else None


def holds(node: Bound, trial: Trial) -> bool:
    """The filter on one trial, in Python (the semantics the databases are held to)."""
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Atom):
        return node.holds(field_value(trial, node.field))
    test = all if isinstance(node, AllOf) else any
    return test(holds(item, trial) for item in node.items)


def sort_value(value: Any) -> tuple[int, Any]:
    """How values of mixed kinds order: numbers, text, booleans (BSON's order)."""
    return (_RANK[kind_of(value)], value)


def merge(parts: Sequence[tuple[int, Sequence[Trial], References]], order: Order | None,
          experiments: Sequence[str], limit: int | None) -> list[Trial]:
    """Trials of every (group, experiment) part in the query's order, cut to ``limit``."""
    rank = {name: i for i, name in enumerate(experiments)}
    keyed = []
    for group, trials, references in parts:
        for trial in trials:
            value = None if order is None else field_value(trial, order.field, references)
            keyed.append((group, value, rank[trial.experiment], trial.trial_id, trial))
    keyed.sort(key=lambda k: (k[0], k[2], k[3]))  # stable: then by value within a group
    if order is not None:
        keyed.sort(key=lambda k: (k[0], _by_value(k[1], order.descending)))
    out = [k[-1] for k in keyed]
    return out if limit is None else out[:limit]


class _Reversed:
    """A sort key in reverse (for descending values with ascending tie-breaks)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.key == other.key


def _by_value(value: Any, descending: bool) -> Any:
    if value is None:
        return (0,)  # a group of absent values: one rank, kept in id order
    key = (1, sort_value(value))
    return _Reversed(key) if descending else key

