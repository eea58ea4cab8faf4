"""A bound filter as an SQLite WHERE clause over the ``trials`` table (JSON functions).

Every comparison is guarded by the JSON type its value must have (``json_type``), so a number
never equals a boolean (SQLite's ``json_extract`` gives 1 for ``true``) and a text never
compares with a number; a field that is absent, null or of another type makes the comparison
NULL or 0, and the negation-normal-form tree selects a row only where it is true
(``fields`` module docstring). A JSON column that is not valid JSON (a tampered row) reads as
absent instead of failing the query; its decoding is reported where the row is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localrules.store.query.fields import (
    BOOL,
    NUMBER,
    STATIC,
    STRING,
    AllOf,
    AnyOf,
    Atom,
    Bound,
    Constant,
)

_SQL_OPS = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_JSON_TYPES = {BOOL: ("true", "false"), NUMBER: ("integer", "real"), STRING: ("text",)}
KIND_OF_JSON_TYPE = {t: kind for kind, types in _JSON_TYPES.items() for t in types}
"""The kind of value of each of ``json_type``'s answers that is a scalar."""
FULL_BUDGET_SQL = ("(state = 'done' AND COALESCE(json_type(CASE WHEN json_valid(result) THEN "
                   "result END, '$.stopped_early'), '') != 'true' AND COALESCE(json_type(CASE "
                   "WHEN json_valid(result) THEN result END, '$.objective'), 'null') != 'null')")
"""``store.documents.full_budget_trial`` in SQL (never NULL)."""
IS_REFERENCE_SQL = ("COALESCE(json_type(CASE WHEN json_valid(reference) THEN reference END, "
                    "'$.rule') = 'text', 0)")
"""A reference run (its marker names a rule) in SQL (never NULL)."""
SORT_INDEXES = {"trials_by_objective": "result.objective", "trials_by_top1": "result.top1"}
"""The expression indexes of the ``trials`` table (name: field), on (experiment, the field's
``sort_terms``) and partial (``SORTED_ROWS``): a top-N of one experiment by these scores reads
the index in order instead of sorting every trial."""
SORTED_ROWS = "result IS NOT NULL"
"""The condition of the sort indexes. SQLite's planner takes an expression index for the
narrowest on ``experiment`` (it counts an expression one byte wide) and would read every
other query of one experiment through it, row by row out of order; a partial index serves
only a query that states its condition, which ``present_sql`` adds to a sorted one."""


def json_path(key: str) -> str:
    """A top-level key as a JSON path (quoted: keys are checked names, never SQL)."""
    return f'$."{key}"'


def _json(column: str) -> str:
    return f"CASE WHEN json_valid({column}) THEN {column} END"


def path_literal(key: str) -> str:
    """A key's JSON path as an SQL string literal (keys are checked names; quotes doubled all
    the same)."""
    return "'" + json_path(key).replace("'", "''") + "'"


def value_sql(field: str, inline: bool = False) -> tuple[str, str | None, list[Any]]:
    """(value expression, JSON-type expression or None for a plain column, arguments). With
    ``inline`` the JSON path is a literal in the text and there are no arguments: the form an
    expression index is made of (SQLite uses one only for the very same text)."""
    if field == "full_budget":
        return FULL_BUDGET_SQL, None, []
    if field == "is_reference":
        return IS_REFERENCE_SQL, None, []
    if field in STATIC and field != "reference":
        return field, None, []
    column, key = ("reference", "rule") if field == "reference" else field.split(".", 1)
    doc = _json(column)
    if inline:
        path = path_literal(key)
        return f"json_extract({doc}, {path})", f"json_type({doc}, {path})", []
    return (f"json_extract({doc}, ?)", f"json_type({doc}, ?)", [json_path(key)])


def _literal(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def atom_sql(atom: Atom) -> tuple[str, list[Any]]:
    expr, type_expr, path = value_sql(atom.field)
    args: list[Any] = list(path)
    if atom.op in ("exists", "absent"):
        if type_expr is None:
            present = f"({expr} IS NOT NULL)"
        else:  # holds a scalar (as field_value reads it)
            present = (f"(COALESCE({type_expr}, 'null') IN ('true', 'false', 'integer', "
                       "'real', 'text'))")
        if atom.field == "reference":  # the column first: the partial index of reference runs
            present = f"(reference IS NOT NULL AND {present})"
        return (present if atom.op == "exists" else f"(NOT {present})"), args
    if atom.op in ("in", "not in"):
        marks = ", ".join("?" * len(atom.value))
        compare = f"{expr} {'IN' if atom.op == 'in' else 'NOT IN'} ({marks})"
        values = [_literal(v) for v in atom.value]
    else:
        compare = f"{expr} {_SQL_OPS[atom.op]} ?"
        values = [_literal(atom.value)]
    if type_expr is None:
        return f"({compare})", args + values
    kinds = _JSON_TYPES[atom.kind]
    guard = f"{type_expr} IN ({', '.join(repr(k) for k in kinds)})"
    # CASE: the comparison is made only on a value of the right JSON type (else NULL)
    return f"(CASE WHEN {guard} THEN {compare} END)", path + path + values


def to_sql(node: Bound) -> tuple[str, list[Any]]:
    """(WHERE clause text, its arguments)."""
    if isinstance(node, Constant):
        return ("1" if node.value else "0"), []
    if isinstance(node, Atom):
        return atom_sql(node)
    parts = [to_sql(item) for item in node.items]
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    assert isinstance(node, (AllOf, AnyOf))
    return ("(" + joiner.join(sql for sql, _ in parts) + ")",
            [a for _, args in parts for a in args])


def sort_terms(field: str) -> tuple[str, ...]:
    """The expressions a field's values sort by (no arguments: paths inline), the kind of
    value's rank first: the terms ``order_sql`` gives and an index of the sort is made of."""
    expr, type_expr, _ = value_sql(field, inline=True)
    if type_expr is None:
        return (expr,)
    rank = (f"CASE {type_expr} WHEN 'integer' THEN 0 WHEN 'real' THEN 0 WHEN 'text' THEN 1 "
            "ELSE 2 END")
    return rank, expr


def present_sql(node: Bound, field: str) -> str | None:
    """A term the filter implies (its document column is there) when it requires ``field``
    to hold a value, to be added to its WHERE clause: then the query may use a sort index
    (``SORTED_ROWS``); None when it does not require it, or for a field of no such index."""
    if field not in SORT_INDEXES.values():
        return None
    needed = Atom(field, "exists", None, None)
    items = node.items if isinstance(node, AllOf) else (node,)
    return SORTED_ROWS if needed in items else None


def order_sql(field: str, descending: bool) -> tuple[str, list[Any]]:
    """ORDER BY terms for a field's values: numbers, then text, then booleans (MongoDB's
    order of types), each by value; all reversed when ``descending``. The JSON paths are
    inline, so an index of the same terms (``SORT_INDEXES``) serves a top-N."""
    direction = "DESC" if descending else "ASC"
    return ", ".join(f"{term} {direction}" for term in sort_terms(field)), []


def kinds_sql(fields: Sequence[str], experiments: int) -> tuple[str, list[Any]]:
    """The JSON types each dynamic field holds among an experiment list's trials, in one scan
    (one row: per field, its distinct ``json_type`` answers joined by commas, or NULL). A
    document is parsed once per row for all its fields, not once per field."""
    columns = []
    args: list[Any] = []
    for field in fields:
        column, key = field.split(".", 1)
        columns.append(f"group_concat(DISTINCT json_type({_json(column)}, ?))")
        args.append(json_path(key))
    marks = ", ".join("?" * experiments)
    return (f"SELECT {', '.join(columns)} FROM trials WHERE experiment IN ({marks})", args)


def fields_sql(experiments: int) -> str:
    """Every params/result key holding a scalar among an experiment list's trials (two
    lists of experiment arguments)."""
    marks = ", ".join("?" * experiments)
    scalar = ", ".join(repr(t) for t in KIND_OF_JSON_TYPE)
    parts = [f"SELECT DISTINCT '{column}.' || j.key FROM trials, json_each({_json(column)}) j "
             f"WHERE trials.experiment IN ({marks}) AND j.type IN ({scalar})"
             for column in ("params", "result")]
    return " UNION ".join(parts)
