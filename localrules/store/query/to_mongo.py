"""A bound filter as a MongoDB query document.

MongoDB's ``$ne`` and ``$nin`` match documents without the field, and a query on a field
matches an array holding the value; every comparison here is therefore guarded by the BSON
type its value must have (``$type``, which fails on an absent or null field) and refuses
arrays, so each comparison is false exactly where the SQLite one is (``fields`` module
docstring).
"""

from __future__ import annotations

from typing import Any

from localrules.store.query.fields import BOOL, NUMBER, STRING, AllOf, Atom, Bound, Constant

_MONGO_OPS = {"==": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte",
              "in": "$in", "not in": "$nin"}
_BSON_TYPES = {BOOL: "bool", NUMBER: "number", STRING: "string"}
KIND_OF_BSON_TYPE = {"bool": BOOL, "double": NUMBER, "int": NUMBER, "long": NUMBER,
                     "decimal": NUMBER, "string": STRING}
"""The kind of value of each of the aggregation ``$type``'s answers that is a scalar."""
NOTHING: dict[str, Any] = {"_id": {"$exists": False}}
FULL_BUDGET = {"state": "done", "result.stopped_early": {"$ne": True},
               "result.objective": {"$ne": None}}
"""``store.documents.full_budget_trial`` as a query."""
NOT_FULL_BUDGET = {"$or": [{"state": {"$ne": "done"}}, {"result.stopped_early": True},
                           {"result.objective": None}]}
DERIVED = {"full_budget": (FULL_BUDGET, NOT_FULL_BUDGET),
           "is_reference": ({"reference.rule": {"$type": "string"}},
                            {"reference.rule": {"$not": {"$type": "string"}}})}
"""The derived booleans as queries: (true where, false where); never absent."""


def path_of(field: str) -> str:
    return "reference.rule" if field == "reference" else field


def _truths(atom: Atom) -> set[bool]:
    """The values of a boolean that an atom accepts."""
    return {v for v in (True, False) if atom.holds(v)}


def atom_mongo(atom: Atom) -> dict[str, Any]:
    if atom.field in DERIVED:  # never absent
        if atom.op in ("exists", "absent"):
            return {} if atom.op == "exists" else NOTHING
        accepted = _truths(atom)
        if accepted == {True, False}:
            return {}
        true, false = DERIVED[atom.field]
        return true if accepted == {True} else false if accepted else NOTHING
    path = path_of(atom.field)
    scalar = {"$type": list(_BSON_TYPES.values()), "$not": {"$type": "array"}}
    if atom.op == "exists":  # holds a scalar (as field_value reads it)
        return {path: scalar}
    if atom.op == "absent":
        return {"$or": [{path: {"$not": {"$type": list(_BSON_TYPES.values())}}},
                        {path: {"$type": "array"}}]}
    value = list(atom.value) if atom.op in ("in", "not in") else atom.value
    return {path: {"$type": _BSON_TYPES[atom.kind], "$not": {"$type": "array"},
                   _MONGO_OPS[atom.op]: value}}


def to_mongo(node: Bound) -> dict[str, Any]:
    if isinstance(node, Constant):
        return {} if node.value else NOTHING
    if isinstance(node, Atom):
        return atom_mongo(node)
    return {"$and" if isinstance(node, AllOf) else "$or": [to_mongo(i) for i in node.items]}


def sort_mongo(field: str, descending: bool) -> list[tuple[str, int]]:
    """A sort on a field's values: BSON's order of types (numbers, text, ..., booleans)."""
    return [(path_of(field), -1 if descending else 1)]


def kinds_pipeline(experiments: list[str], fields: list[str]) -> list[dict[str, Any]]:
    """An aggregation giving, for each field, the BSON types its values have."""
    return [{"$match": {"experiment": {"$in": experiments}}},
            {"$group": {"_id": None, **{f"f{i}": {"$addToSet": {"$type": f"${field}"}}
                                        for i, field in enumerate(fields)}}}]


def fields_pipeline(experiments: list[str]) -> list[dict[str, Any]]:
    """An aggregation listing every params/result key holding a scalar."""
    stages: list[dict[str, Any]] = [
        {"$match": {"experiment": {"$in": experiments}}},
        {"$project": {"kv": {"$concatArrays": [
            {"$map": {"input": {"$objectToArray": {"$ifNull": [f"${column}", {}]}},
                      "in": {"k": {"$concat": [f"{column}.", "$$this.k"]},
                             "t": {"$type": "$$this.v"}}}}
            for column in ("params", "result")]}}},
        {"$unwind": "$kv"},
        {"$match": {"kv.t": {"$in": list(KIND_OF_BSON_TYPE)}}},
        {"$group": {"_id": "$kv.k"}}]
    return stages
