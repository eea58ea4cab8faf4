"""The filter language of ``localrules trials --where`` and ``TrialStore.query(where=...)``.

A small language over dotted fields, parsed here into an expression tree (never evaluated as
Python: there is no name, call, attribute or operator in it but those below)::

    expr     := or
    or       := and ("or" and)*
    and      := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | test
    test     := FIELD [op value | ["not"] "in" "(" value ("," value)* ")"]
    op       := "==" | "!=" | "<" | "<=" | ">" | ">="
    value    := NUMBER | 'text' | "text" | true | false | WORD

A FIELD is dotted words (``state``, ``params.batch_size``, ``result.top1``); a bare FIELD is a
truth test of a boolean field (``params.alternate`` means ``params.alternate == true``). A WORD
on the right is a string (``state in (done, failed)``). Strings hold no quotes or backslashes;
numbers are finite. Keywords are lower case. What a field is and which values fit it is
decided later (``fields.bind``); here only the form is checked, and every error names its
position in the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

Scalar = bool | int | float | str

MAX_LENGTH = 10_000
"""Longest filter text accepted."""
MAX_DEPTH = 50
"""Deepest nesting of parentheses and ``not`` accepted (no recursion error on hostile input)."""
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})


class QuerySyntaxError(ValueError):
    """A filter that is not in the language (or does not fit the fields it names): the
    message gives the position (1-based column) and the text around it."""

    def __init__(self, message: str, text: str = "", position: int | None = None) -> None:
        self.position = position
        self.text = text
        self.reason = message
        where = ""
        if position is not None:
            where = f" at position {position + 1}"
            if text and len(text) <= 200 and "\n" not in text:
                message += f"\n  {text}\n  {' ' * position}^"
        super().__init__(f"--where{where}: {message}")


# --- the tree -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    """``field op value``; ``at`` is its position in the text."""

    field: str
    op: str
    value: Scalar
    at: int = 0


@dataclass(frozen=True)
class Member:
    """``field in (values)`` (``negated``: ``not in``)."""

    field: str
    values: tuple[Scalar, ...]
    negated: bool = False
    at: int = 0


@dataclass(frozen=True)
class Truth:
    """A bare field: true where the (boolean) field is true."""

    field: str
    at: int = 0


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Compare | Member | Truth | Not | And | Or


def fields_of(node: Node) -> Iterator[tuple[str, int]]:
    """Every (field, position) the tree names."""
    if isinstance(node, (Compare, Member, Truth)):
        yield node.field, node.at
    elif isinstance(node, Not):
        yield from fields_of(node.operand)
    else:
        for item in node.items:
            yield from fields_of(item)


# --- tokens -------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_.]))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[(),])
  | (?P<string>'[^'"\\]*'|"[^'"\\]*")
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str  # number, word, op, punct, string, end
    text: str
    at: int


def tokens(text: str) -> list[Token]:
    out = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            char = text[at]
            if char in "'\"":
                raise QuerySyntaxError(
                    "a string runs from one quote to the same quote and holds no quotes or "
                    "backslashes", text, at)
            if char == "=":
                raise QuerySyntaxError("'=' is not an operator: compare with '=='", text, at)
            raise QuerySyntaxError(
                f"unexpected {char!r}: the language has fields, values, the comparisons "
                f"{' '.join(OPERATORS)}, in, and, or, not and parentheses", text, at)
        kind = match.lastgroup
        if kind != "space":
            out.append(Token(kind, match.group(), at))
        at = match.end()
    out.append(Token("end", "", len(text)))
    return out


# --- the parser ---------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, token: Token | None = None) -> QuerySyntaxError:
        token = token or self.token
        return QuerySyntaxError(message, self.text, token.at)

    def take(self, kind: str, text: str | None = None) -> Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            self.i += 1
            return token
        return None

    def expect(self, kind: str, text: str, what: str) -> Token:
        token = self.take(kind, text)
        if token is None:
            found = "the end" if self.token.kind == "end" else repr(self.token.text)
            raise self.error(f"expected {what}, found {found}")
        return token

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise self.error("the filter is empty")
        node = self.or_()
        if self.token.kind != "end":
            raise self.error(f"unexpected {self.token.text!r}: expected and, or, or the end")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.take("word", "or"):
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.unary()]
        while self.take("word", "and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels")
        try:
            if self.take("word", "not"):
                return Not(self.unary())
            if self.take("punct", "("):
                node = self.or_()
                self.expect("punct", ")", "')'")
                return node
            return self.test()
        finally:
            self.depth -= 1

    def test(self) -> Node:
        token = self.token
        if token.kind != "word" or token.text in KEYWORDS:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise self.error(f"expected a field (such as state or params.NAME), found {found}")
        self.i += 1
        field = token.text
        if self.token.kind == "punct" and self.token.text == "(":
            raise self.error(f"{field!r} is a field, not a function: the language has no calls")
        if op := self.take("op"):
            return Compare(field, op.text, self.value(), token.at)
        negated = False
        if self.token.kind == "word" and self.token.text == "not" \
                and self.tokens[self.i + 1].text == "in":
            self.i += 1
            negated = True
        if self.take("word", "in"):
            self.expect("punct", "(", "'(' after in")
            values = [self.value()]
            while self.take("punct", ","):
                values.append(self.value())
            self.expect("punct", ")", "')' or ',' in the list")
            return Member(field, tuple(values), negated, token.at)
        return Truth(field, token.at)

    def value(self) -> Scalar:
        token = self.token
        self.i += 1
        if token.kind == "number":
            value = float(token.text)
            if not math.isfinite(value) or abs(value) > 1e300:
                raise self.error(f"{token.text} is not a finite number", token)
            if re.fullmatch(r"-?\d+", token.text):
                if abs(int(token.text)) >= 2**63:  # what SQLite and MongoDB store
                    raise self.error(f"{token.text} is beyond 64-bit integers", token)
                return int(token.text)
            return value
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "word":
            if token.text in ("true", "false"):
                return token.text == "true"
            if token.text in KEYWORDS:
                raise self.error(f"expected a value, found the keyword {token.text!r}", token)
            if token.text in ("null", "None", "nan", "inf"):
                raise self.error(
                    f"{token.text!r} is not a value: an absent field fails every comparison "
                    "(quote it to mean the string)", token)
            if "." in token.text:
                raise self.error(f"{token.text!r}: compare a field with a value, not another "
                                 "field (quote it to mean the string)", token)
            return token.text
        found = "the end" if token.kind == "end" else repr(token.text)
        raise self.error(f"expected a value (a number, 'text', true or false), found {found}",
                         token)


def parse(text: str) -> Node:
    """The expression tree of a filter (``QuerySyntaxError`` naming the position)."""
    if not isinstance(text, str):
        raise QuerySyntaxError(f"a filter is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise QuerySyntaxError(f"the filter is {len(text)} characters long; at most "
                               f"{MAX_LENGTH}")
    if "\x00" in text:
        raise QuerySyntaxError("the filter holds a NUL character", text, text.index("\x00"))
    return _Parser(text).parse()
