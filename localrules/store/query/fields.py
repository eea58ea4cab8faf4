"""What the filter language's fields are, and a parsed filter bound to them.

Fields:

- the trial's own: ``experiment``, ``trial_id``, ``state``, ``attempt``, ``lapses``,
  ``worker``, ``error``, ``code_version``, ``created_at``, ``started_at``, ``updated_at``,
  ``finished_at`` (Unix seconds; compared with a number or an ISO date/time text, UTC unless
  it says otherwise);
- ``params.NAME`` and ``result.NAME``: whatever the experiments' trials hold, with the JSON
  types they hold (read from the database for the fields a filter names, so a YAML space's
  choice of mixed values is typed as its values are);
- derived: ``full_budget`` (done with a full-budget result:
  ``store.documents.full_budget_trial``), ``reference`` (a reference run's rule),
  ``is_reference`` (whether it is one: ``not is_reference`` selects the search's own trials),
  and ``result.gap_closed`` (``gap_closed``): the gap a full-budget result closes between
  the experiment's fa and bp references, compared as its objective against the equivalent
  threshold ``fa + value·(bp − fa)``; a trial has none in an experiment without both
  references (``store.references``).

**One semantics on every backend** (SQL's three-valued logic, read the same on MongoDB and in
pandas): a comparison of a field a trial does not have (an inactive parameter, a result not
there yet, a JSON null), or has with another type than the value's, is *unknown*; ``not`` of
unknown is unknown, ``and``/``or`` combine as Kleene's logic, and a trial is selected only
when the whole filter is true. So ``params.sigma != 0.5`` and ``not params.sigma == 0.5`` are
both false for a trial without noise. ``bind`` brings a filter to negation normal form (``not``
pushed onto the comparisons, each flipped: ``not a < 1`` is ``a >= 1``, which is just as
unknown where ``a`` is absent), and there unknown and false select alike: every backend
evaluates the same and/or tree of typed comparisons, each false where its field is absent or
of another type.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from localrules.store.documents import STATES
from localrules.store.query.language import (
    And,
    Compare,
    Member,
    Node,
    Not,
    Or,
    QuerySyntaxError,
    Scalar,
    Truth,
    fields_of,
    parse,
)

BOOL, NUMBER, STRING = "bool", "number", "string"
KINDS = (BOOL, NUMBER, STRING)
TIME_FIELDS = ("created_at", "started_at", "updated_at", "finished_at")
STATIC: dict[str, str] = {
    "experiment": STRING, "trial_id": NUMBER, "state": STRING, "attempt": NUMBER,
    "lapses": NUMBER, "worker": STRING, "error": STRING, "code_version": STRING,
    **dict.fromkeys(TIME_FIELDS, NUMBER),
    "full_budget": BOOL, "reference": STRING, "is_reference": BOOL,
}
"""The fields every trial has a column (or a derived value) for, and their kinds."""
GAP_CLOSED = "result.gap_closed"
ALIASES = {"gap_closed": GAP_CLOSED, "objective": "result.objective", "top1": "result.top1",
           "top5": "result.top5", "rung": "result.rung", "diverged": "result.diverged",
           "epochs": "result.epochs", "trial_epochs": "result.trial_epochs"}
"""Short names (those ``localrules trials --sort`` always took) for their dotted fields."""
DYNAMIC = ("params.", "result.")
FLIP = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">", "in": "not in",
        "not in": "in", "exists": "absent", "absent": "exists"}
ORDERING = ("<", "<=", ">", ">=")


def canonical(field: str) -> str:
    """The field a name means (an alias's dotted field)."""
    return ALIASES.get(field, field)


_DYNAMIC = re.compile(r"(params|result)\.[A-Za-z0-9_]+")


def is_dynamic(field: str) -> bool:
    """Whether a field is one of the trials' own params/result keys (one name after the
    dot; a key with other characters cannot be named in a filter)."""
    return bool(_DYNAMIC.fullmatch(field)) and field != GAP_CLOSED


# --- the bound tree -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Atom:
    """A typed comparison: ``field op value`` where the field holds a value of ``kind`` (false
    otherwise). ``op`` is a comparison, ``in``/``not in`` (``value`` a tuple), or ``exists``/
    ``absent`` (a value of any kind; used to order results, not written by users)."""

    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None
    kind: str | None

    def negate(self) -> Atom:
        return Atom(self.field, FLIP[self.op], self.value, self.kind)

    def holds(self, value: object) -> bool:
        """The comparison on one stored value (``None``: absent)."""
        if self.op in ("exists", "absent"):
            return (value is not None) == (self.op == "exists")
        if value is None or kind_of(value) != self.kind:
            return False
        if self.op in ("in", "not in"):
            inside = any(value == v for v in self.value)
            return inside == (self.op == "in")
        return _COMPARE[self.op](value, self.value)


_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@dataclass(frozen=True)
class AllOf:
    items: tuple[Bound, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Bound, ...]


@dataclass(frozen=True)
class Constant:
    """True or false whatever the trial (a gap closed in an experiment that has none)."""

    value: bool


Bound = Atom | AllOf | AnyOf | Constant
EVERYTHING = Constant(True)


def kind_of(value: object) -> str | None:
    """The kind of a stored scalar (None for anything else: null, a list, a mapping)."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    return None


def all_of(items: Iterable[Bound]) -> Bound:
    """The conjunction, simplified (constants folded, nesting flattened)."""
    out: list[Bound] = []
    for item in items:
        if isinstance(item, Constant):
            if not item.value:
                return item
            continue
        out.extend(item.items if isinstance(item, AllOf) else (item,))
    return EVERYTHING if not out else out[0] if len(out) == 1 else AllOf(tuple(out))


def any_of(items: Iterable[Bound]) -> Bound:
    out: list[Bound] = []
    for item in items:
        if isinstance(item, Constant):
            if item.value:
                return item
            continue
        out.extend(item.items if isinstance(item, AnyOf) else (item,))
    return Constant(False) if not out else out[0] if len(out) == 1 else AnyOf(tuple(out))


def atoms(node: Bound) -> Iterable[Atom]:
    if isinstance(node, Atom):
        yield node
    elif isinstance(node, (AllOf, AnyOf)):
        for item in node.items:
            yield from atoms(item)


def specialise(node: Bound, replace: Callable[[Atom], Bound]) -> Bound:
    """The tree with every atom replaced by ``replace(atom)`` (e.g. a gap closed by its
    experiment's objective threshold), simplified."""
    if isinstance(node, Atom):
        return replace(node)
    if isinstance(node, AllOf):
        return all_of(specialise(i, replace) for i in node.items)
    if isinstance(node, AnyOf):
        return any_of(specialise(i, replace) for i in node.items)
    return node


# --- the catalog --------------------------------------------------------------------------------
@dataclass
class Catalog:
    """The kinds each field holds in the experiments asked about: the static fields', and for
    ``params.*``/``result.*`` what the database says (``kinds`` for the named fields; ``every``,
    called only to list them in an error, for all)."""

    kinds: Mapping[str, frozenset[str]]
    every: Callable[[], Iterable[str]] = lambda: ()

    def kinds_of(self, field: str) -> frozenset[str] | None:
        if field == GAP_CLOSED:
            return frozenset({NUMBER})
        if field in STATIC:
            return frozenset({STATIC[field]})
        return self.kinds.get(field)

    def valid(self) -> str:
        """Every field, for an error message."""
        return ", ".join([*STATIC, GAP_CLOSED, self.valid_dynamic()])

    def valid_dynamic(self) -> str:
        """The params/result fields the experiments' trials hold, for an error message."""
        names = sorted(set(self.every()) - {GAP_CLOSED})
        return ", ".join(names) if names else "no params or result fields yet"


def named_fields(text: str) -> list[str]:
    """The dynamic fields a filter names (what the catalog must type), in order."""
    return list(dict.fromkeys(canonical(f) for f, _ in fields_of(parse(text))
                              if is_dynamic(canonical(f))))


def bind(text: str, catalog: Catalog) -> Bound:
    """The filter as a tree of typed atoms in negation normal form (module docstring);
    ``QuerySyntaxError`` (a ValueError naming the position) for a field that is not there or a
    value that does not fit it."""
    return _Binder(text, catalog).bind(parse(text), negated=False)


class _Binder:
    def __init__(self, text: str, catalog: Catalog) -> None:
        self.text = text
        self.catalog = catalog

    def error(self, message: str, at: int) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.text, at)

    def bind(self, node: Node, negated: bool) -> Bound:
        if isinstance(node, Not):
            return self.bind(node.operand, not negated)
        if isinstance(node, (And, Or)):
            parts = [self.bind(item, negated) for item in node.items]
            conjunction = isinstance(node, And) != negated  # De Morgan
            return all_of(parts) if conjunction else any_of(parts)
        atom = self.atom(node)
        return atom.negate() if negated else atom

    def field(self, name: str, at: int) -> tuple[str, frozenset[str]]:
        field = canonical(name)
        kinds = self.catalog.kinds_of(field)
        if kinds is None:
            if field.startswith(DYNAMIC) and not is_dynamic(field):
                raise self.error(f"{name!r}: a params or result field is one name after the "
                                 "dot (params.NAME, result.NAME)", at)
            raise self.error(f"unknown field {name!r}; valid fields: {self.catalog.valid()}",
                             at)
        if not kinds:
            raise self.error(f"{name!r} holds no number, text or boolean in these experiments "
                             "(only lists, mappings or nulls): nothing to compare", at)
        return field, kinds

    def atom(self, node: Compare | Member | Truth) -> Atom:
        field, kinds = self.field(node.field, node.at)
        if isinstance(node, Truth):
            if BOOL not in kinds:
                raise self.error(f"a bare field is a truth test, but {node.field!r} holds "
                                 f"{_kinds_text(kinds)}: compare it (e.g. {node.field} == ...)",
                                 node.at)
            return Atom(field, "==", True, BOOL)
        if isinstance(node, Compare):
            value, kind = self.value(field, kinds, node.value, node.at)
            if node.op in ORDERING and kind == BOOL:
                raise self.error(f"{node.field!r} is compared with {node.op}, but a boolean "
                                 "is only equal or not (== or !=)", node.at)
            return Atom(field, node.op, value, kind)
        pairs = [self.value(field, kinds, v, node.at) for v in node.values]
        found = {k for _, k in pairs}
        if len(found) > 1:
            raise self.error(f"the values in the list for {node.field!r} are of different "
                             f"kinds ({', '.join(sorted(found))}); give one kind", node.at)
        return Atom(field, "not in" if node.negated else "in",
                    tuple(dict.fromkeys(v for v, _ in pairs)), found.pop())

    def value(self, field: str, kinds: frozenset[str], value: Scalar, at: int
              ) -> tuple[Scalar, str]:
        kind = kind_of(value)
        if field in TIME_FIELDS and kind == STRING:
            return _timestamp(value, field, self, at), NUMBER
        if kind not in kinds:
            raise self.error(f"{field!r} holds {_kinds_text(kinds)}, not "
                             f"{_kinds_text({kind})} like {value!r}", at)
        if field == "state" and value not in STATES:
            raise self.error(f"unknown state {value!r}; states: {', '.join(STATES)}", at)
        return value, kind


def _kinds_text(kinds: Iterable[str]) -> str:
    words = {BOOL: "booleans", NUMBER: "numbers", STRING: "text"}
    return " and ".join(words[k] for k in sorted(kinds))


def _timestamp(text: str, field: str, binder: _Binder, at: int) -> float:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise binder.error(f"{field!r} is a time: compare it with Unix seconds or an ISO "
                           f"date/time such as '2026-12-01' or '2026-12-01T08:00:00+01:00', "
                           f"not {text!r}", at) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
