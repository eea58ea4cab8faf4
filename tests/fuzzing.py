"""Hypothesis strategies for hostile input, shared by the property-based (``fuzz``) tests.

Each strategy draws what a hostile user or an unlucky operator could hand a boundary: numbers
that are not finite or far too large, JSON of the wrong shape or nested past any reader's
recursion limit, and text with the characters that break quoting and URL parsing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

HUGE_INTS = st.sampled_from([2**31, 2**32, 2**53 + 1, 2**63, 2**64, 10**30, -(2**63) - 1])
"""Integers past SQLite's, BSON's or hyperopt's range (and the paper's settings)."""

NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])

NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e400", "0x10",
                     "", " ", "1_000", "१२", "+", "-", "--1", "1e", "9" * 400, "0", "-0", "-1"]),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
"""What a user can type after a numeric flag."""


def nested(depth: int, leaf: Any = 0, container: str = "list") -> Any:
    """``leaf`` wrapped ``depth`` times in lists (or single-key mappings): a JSON nesting bomb."""
    value = leaf
    for _ in range(depth):
        value = [value] if container == "list" else {"a": value}
    return value


def nesting_bomb_json(depth: int = 100_000) -> str:
    """JSON text nested ``depth`` deep, built as text (``json.dumps`` itself would recurse)."""
    return "[" * depth + "]" * depth


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(allow_nan=False),
    st.text(max_size=20),
)

JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=20,
)
"""Any JSON value of modest size: the wrong type wherever a field expects something else."""


def mutated_mapping(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one key set to a hostile value, deleted, or added (possibly nested)."""

    def set_path(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
        data = json.loads(json.dumps(data))
        node = data
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
        return data

    def paths(data: dict[str, Any], prefix: list[str]) -> list[list[str]]:
        out = []
        for key, value in data.items():
            out.append([*prefix, key])
            if isinstance(value, dict):
                out.extend(paths(value, [*prefix, key]))
        return out

    all_paths = paths(base, []) or [["x"]]
    hostile = st.one_of(JSON_VALUES, NON_FINITE, HUGE_INTS,
                        st.integers(0, 500).map(lambda d: nested(d)))
    return st.one_of(
        st.builds(lambda p, v: set_path(base, p, v), st.sampled_from(all_paths), hostile),
        st.builds(lambda k, v: set_path(base, [k], v), st.text(min_size=1, max_size=8), hostile),
        st.sampled_from(all_paths).map(
            lambda p: _deleted(json.loads(json.dumps(base)), p)),
    )


def _deleted(data: dict[str, Any], path: list[str]) -> dict[str, Any]:
    node = data
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)
    return data


URL_PASSWORDS = st.one_of(
    st.sampled_from(["p@ss word", "p%40ss", "a:b", "sl/ash", "q?uery", "h#sh", "ünï", "pa ss%2F",
                     "%%", "@@", "]][[", "x" * 200]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24),
)
"""Passwords a MongoDB URL may carry (raw or percent-encoded); none may ever be printed."""


# --- stored documents (tests/test_documents.py) --------------------------------------------------
NOT_JSON_TEXT = st.one_of(
    st.sampled_from(["", "{", "{not json", "NaN", '{"objective": NaN}', "[Infinity]", "None",
                     "{'a': 1}", "\x00", "null", "[]", "7", '"text"', "true"]),
    st.sampled_from([1_000, 100_000]).map(nesting_bomb_json),
    st.text(max_size=20),
)
"""What a TEXT column holding a JSON document may hold once someone wrote it behind the
store's back: broken text, non-strict constants, nesting bombs, JSON of the wrong type."""


def bson_oddities() -> st.SearchStrategy[Any]:
    """BSON values JSON has no form for (a MongoDB document written by another program)."""
    import datetime

    import bson
    from bson.decimal128 import Decimal128

    return st.sampled_from([
        bson.ObjectId("0123456789ab0123456789ab"), datetime.datetime(2020, 1, 1), b"\x00bytes",
        Decimal128("1.5"), bson.Regex("a.*"), bson.MinKey(), bson.Timestamp(1, 2),
        bson.Code("x"), {"nested": [datetime.datetime(2021, 1, 1)]},
    ])


# --- YAML space files (appended for the input-limits tests) ---------------------------------------
YAML_KEYS = st.sampled_from([
    "parameters", "choice", "value", "set", "key", "uniform", "loguniform", "int", "name", "fixed",
    "warm_start", "base", "description", "run.batch_size", "run.alignment_lr", "run.epochs",
    "rule.noise", "rule.noise.stddev", "rule.weights.amp", "width", "seed", "x", "y", "<<",
    "rule.weights.amp.x", "dataset_options.a.b", "rule.noise.stddev.x", "run", "rule", ""])

YAML_LEAVES = st.one_of(JSON_LEAVES, NON_FINITE, HUGE_INTS, YAML_KEYS)

YAML_VALUES = st.recursive(
    YAML_LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(YAML_KEYS, children, max_size=5)),
    max_leaves=30,
)
"""Space-shaped YAML data: the format's own keys with values of any shape."""


def _flow(depth: int, opening: str, closing: str, leaf: str = "1") -> str:
    return opening * depth + leaf + closing * depth


HOSTILE_YAML_TEXT = st.one_of(
    st.integers(0, 3000).map(lambda d: "parameters:\n  x: " + _flow(d, "[", "]") + "\n"),
    st.integers(0, 3000).map(lambda d: "parameters:\n  x: " + _flow(d, "{a: ", "}") + "\n"),
    st.integers(0, 300_000).map(
        lambda n: "parameters:\n  x: {key: null, choice: [" + ",".join(["1"] * n) + "]}\n"),
    st.integers(0, 400).map(
        lambda n: "parameters:\n  x: {key: null, choice: [" + ", ".join(map(str, range(n)))
        + "]}\n"),
    st.integers(1, 12).map(lambda k: "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, k))
        + "parameters: {x: {uniform: [0, 1]}}\n"),
    st.sampled_from(["parameters:\n  x: {uniform: [0, 1]}\n  x: {uniform: [0, 2]}\n",
                     "parameters: {a: {key: width, int: [1, 8]}, b: {key: width, int: [2, 9]}}\n",
                     "parameters: !!python/object:os.system {}\n", "%YAML 9.9\n---\n", "\t",
                     "parameters: *nowhere\n", "? [a, b]\n: 1\n", "parameters: {[1]: 2}\n"]),
    st.text(max_size=200),
)
"""Space files built to hurt a reader: nesting past any recursion limit, huge choices, alias
bombs, repeated keys, keys set twice, tags and plain noise."""
