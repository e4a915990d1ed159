"""Target expressions: decide which minions a job is for, the way SaltStack does.

``compile_target(expr, tgt_type)`` parses once into a :class:`Matcher`; ``matcher.matches(id,
grains)`` then answers per minion. Types: ``glob`` (fnmatch on the id), ``list`` (comma-separated
ids), ``grain`` (``key[:subkey...]:glob``) and ``compound`` (``G@``/``L@``/``E@``/``P@`` matchers
and bare id globs joined by ``and``/``or``/``not`` and parentheses). All matching is
case-sensitive. Bad input raises :class:`TargetError` naming the problem and its position.
"""

from __future__ import annotations

import fnmatch
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Final

from saline.errors import TargetError

__all__ = [
    "AndMatcher",
    "GlobMatcher",
    "GrainMatcher",
    "GrainRegexMatcher",
    "ListMatcher",
    "Matcher",
    "NotMatcher",
    "OrMatcher",
    "RegexMatcher",
    "TargetType",
    "compile_target",
    "match_minions",
]

# Deeper nesting than this is never a real target; the limit keeps the recursive parser
# from hitting Python's recursion limit on hostile input.
MAX_DEPTH: Final = 100

_PREFIX_RE: Final = re.compile(r"([A-Za-z])@")
_OPERATORS: Final = frozenset({"and", "or", "not"})
_MISSING: Final = object()


class TargetType(StrEnum):
    """The target expression languages :func:`compile_target` understands."""

    GLOB = "glob"
    LIST = "list"
    GRAIN = "grain"
    COMPOUND = "compound"


class Matcher(ABC):
    """A compiled target: answers whether one minion is targeted."""

    @abstractmethod
    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        """Return True if the minion with this id and these grains is targeted."""


@dataclass(frozen=True)
class GlobMatcher(Matcher):
    """fnmatch-style, case-sensitive glob on the minion id."""

    pattern: str

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return fnmatch.fnmatchcase(minion_id, self.pattern)


@dataclass(frozen=True)
class ListMatcher(Matcher):
    """Exact membership of the minion id in a set of ids."""

    ids: frozenset[str]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return minion_id in self.ids


@dataclass(frozen=True)
class RegexMatcher(Matcher):
    """Regular expression that must match the whole minion id."""

    regex: re.Pattern[str]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return self.regex.fullmatch(minion_id) is not None


@dataclass(frozen=True)
class GrainMatcher(Matcher):
    """Grain glob; each candidate is one way of splitting ``a:b:c`` into key path and value.

    Salt tries every split because values may contain ``:`` (e.g. ``ipv6:fe80::1``); the minion
    matches if any split names an existing grain whose value matches.
    """

    candidates: tuple[tuple[tuple[str, ...], str], ...]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        for path, pattern in self.candidates:
            value = _lookup(grains, path)
            if value is _MISSING:
                continue
            if isinstance(value, Mapping):
                # A nested dict matches only the "does it exist" pattern, as in Salt.
                if pattern == "*":
                    return True
                continue
            if _value_matches(value, partial(fnmatch.fnmatchcase, pat=pattern)):
                return True
        return False


@dataclass(frozen=True)
class GrainRegexMatcher(Matcher):
    """Grain regex (``P@``): like :class:`GrainMatcher` but the value must fullmatch a regex."""

    candidates: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        for path, regex in self.candidates:
            value = _lookup(grains, path)
            if value is _MISSING or isinstance(value, Mapping):
                continue
            if _value_matches(value, regex.fullmatch):
                return True
        return False


@dataclass(frozen=True)
class AndMatcher(Matcher):
    """True when every part matches."""

    parts: tuple[Matcher, ...]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return all(part.matches(minion_id, grains) for part in self.parts)


@dataclass(frozen=True)
class OrMatcher(Matcher):
    """True when any part matches."""

    parts: tuple[Matcher, ...]

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return any(part.matches(minion_id, grains) for part in self.parts)


@dataclass(frozen=True)
class NotMatcher(Matcher):
    """True when the operand does not match."""

    operand: Matcher

    def matches(self, minion_id: str, grains: Mapping[str, Any]) -> bool:
        return not self.operand.matches(minion_id, grains)


def _lookup(grains: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Walk nested mappings along ``path``; return ``_MISSING`` if any step is absent."""
    node: Any = grains
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _value_matches(value: Any, test: Callable[[str], object]) -> bool:
    """Apply ``test`` to ``str(value)``, or to each element if the grain is a list."""
    if isinstance(value, list | tuple | set | frozenset):
        return any(test(str(item)) for item in value)
    return bool(test(str(value)))


def _fail(problem: str, expr: str, pos: int) -> TargetError:
    return TargetError(f"{problem}, at position {pos} in target {expr!r}")


def _compile_regex(pattern: str, what: str, expr: str, pos: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        # re.error's own position is relative to the regex; keep only its message.
        reason = exc.msg if isinstance(exc, re.error) else str(exc)
        raise _fail(f"invalid regex in {what} ({reason})", expr, pos) from None


def _grain_splits(body: str, expr: str, pos: int) -> list[tuple[tuple[str, ...], str]]:
    """Every (key path, value) reading of ``key[:subkey...]:value``, longest value first."""
    if ":" not in body:
        raise _fail(f"grain target {body!r} needs the form 'key:value'", expr, pos)
    segments = body.split(":")
    if not segments[0]:
        raise _fail(f"grain target {body!r} has an empty key", expr, pos)
    return [(tuple(segments[:idx]), ":".join(segments[idx:])) for idx in range(1, len(segments))]


def _grain_matcher(body: str, expr: str, pos: int) -> GrainMatcher:
    return GrainMatcher(tuple(_grain_splits(body, expr, pos)))


def _grain_regex_matcher(body: str, expr: str, pos: int) -> GrainRegexMatcher:
    splits = _grain_splits(body, expr, pos)
    candidates: list[tuple[tuple[str, ...], re.Pattern[str]]] = []
    for path, pattern in splits:
        try:
            candidates.append((path, re.compile(pattern)))
        except (re.error, OverflowError, RecursionError):
            continue  # this split is not the intended one; another may be
    if not candidates:
        # Report against the longest reading: that is the value the user most likely meant.
        _compile_regex(splits[0][1], f"grain regex {body!r}", expr, pos)
    return GrainRegexMatcher(tuple(candidates))


def _list_matcher(body: str, expr: str, pos: int) -> ListMatcher:
    ids = frozenset(item.strip() for item in body.split(",") if item.strip())
    if not ids:
        raise _fail(f"list target {body!r} names no minion ids", expr, pos)
    return ListMatcher(ids)


# --- compound parsing ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "and", "or", "not" or "term"
    text: str
    pos: int


def _tokenize(expr: str) -> list[_Token]:
    """Split on whitespace, then peel parentheses glued to the start or end of a word."""
    tokens: list[_Token] = []
    for word_match in re.finditer(r"\S+", expr):
        word, start = word_match.group(), word_match.start()
        while word.startswith("("):
            tokens.append(_Token("(", "(", start))
            word, start = word[1:], start + 1
        # Peel a trailing ")" only while it is unbalanced inside the word, so a regex such as
        # E@web(1|2) keeps its own group.
        closers: list[_Token] = []
        while word.endswith(")") and word.count(")") > word.count("("):
            word = word[:-1]
            closers.append(_Token(")", ")", start + len(word)))
        if word:
            kind = word if word in _OPERATORS else "term"
            tokens.append(_Token(kind, word, start))
        tokens.extend(reversed(closers))
    return tokens


class _Parser:
    """Recursive descent; precedence ``not`` > ``and`` > ``or``.

    expr := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | atom ;
    atom := '(' expr ')' | term
    """

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.index = 0
        self.depth = 0

    def parse(self) -> Matcher:
        if not self.tokens:
            raise TargetError(f"empty target expression {self.expr!r}")
        node = self._or()
        tok = self._peek()
        if tok is not None:
            if tok.kind == ")":
                raise self._fail("unbalanced parentheses: unexpected ')'", tok.pos)
            raise self._missing_operator(tok)
        return node

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _advance(self) -> _Token:
        tok = self.tokens[self.index]
        self.index += 1
        return tok

    def _previous(self) -> _Token | None:
        return self.tokens[self.index - 1] if self.index > 0 else None

    def _fail(self, problem: str, pos: int) -> TargetError:
        return _fail(problem, self.expr, pos)

    def _missing_operator(self, tok: _Token) -> TargetError:
        if tok.kind == "not":
            return self._fail("unexpected 'not' (write 'and not' or 'or not')", tok.pos)
        hint = " (operators are lowercase)" if tok.text.lower() in _OPERATORS else ""
        return self._fail(f"expected 'and' or 'or' before {tok.text!r}{hint}", tok.pos)

    def _nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            tok = self._peek()
            pos = tok.pos if tok is not None else len(self.expr)
            raise self._fail(f"expression nested deeper than {MAX_DEPTH} levels", pos)

    def _or(self) -> Matcher:
        parts = [self._and()]
        while (tok := self._peek()) is not None and tok.kind == "or":
            self._advance()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else OrMatcher(tuple(parts))

    def _and(self) -> Matcher:
        parts = [self._not()]
        while (tok := self._peek()) is not None and tok.kind == "and":
            self._advance()
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else AndMatcher(tuple(parts))

    def _not(self) -> Matcher:
        tok = self._peek()
        if tok is not None and tok.kind == "not":
            self._advance()
            self._nest()
            operand = self._not()
            self.depth -= 1
            return NotMatcher(operand)
        return self._atom()

    def _atom(self) -> Matcher:
        tok = self._peek()
        prev = self._previous()
        if tok is None:
            # Only reachable right after an operator or an opening parenthesis.
            assert prev is not None
            if prev.kind == "(":
                raise self._fail("unbalanced parentheses: '(' is never closed", prev.pos)
            raise self._fail(f"dangling {prev.kind!r}: nothing follows it", prev.pos)
        if tok.kind == "(":
            return self._group()
        if tok.kind == "term":
            self._advance()
            return _term(tok.text, self.expr, tok.pos)
        if tok.kind == ")":
            if prev is not None and prev.kind in _OPERATORS:
                raise self._fail(f"dangling {prev.kind!r}: nothing follows it", prev.pos)
            raise self._fail("unbalanced parentheses: unexpected ')'", tok.pos)
        # tok is 'and' / 'or' where a target was expected.
        if prev is None or prev.kind == "(":
            raise self._fail(f"dangling {tok.kind!r}: nothing precedes it", tok.pos)
        raise self._fail(
            f"dangling {prev.kind!r}: followed by {tok.kind!r} instead of a target",
            prev.pos,
        )

    def _group(self) -> Matcher:
        opener = self._advance()
        nxt = self._peek()
        if nxt is not None and nxt.kind == ")":
            raise self._fail("empty parentheses", opener.pos)
        self._nest()
        inner = self._or()
        self.depth -= 1
        closer = self._peek()
        if closer is None:
            raise self._fail("unbalanced parentheses: '(' is never closed", opener.pos)
        if closer.kind != ")":
            raise self._missing_operator(closer)
        self._advance()
        return inner


def _term(word: str, expr: str, pos: int) -> Matcher:
    """One compound word: ``X@body`` with a known prefix, or a bare glob on the minion id."""
    prefix = _PREFIX_RE.match(word)
    if prefix is None:
        return GlobMatcher(word)
    letter, body, body_pos = prefix.group(1), word[2:], pos + 2
    if letter not in "GLEP":
        raise _fail(
            f"unknown matcher prefix '{letter}@' (expected one of G@, L@, E@, P@)", expr, pos
        )
    if not body:
        raise _fail(f"empty '{letter}@' matcher", expr, pos)
    if letter == "G":
        return _grain_matcher(body, expr, body_pos)
    if letter == "L":
        return _list_matcher(body, expr, body_pos)
    if letter == "E":
        return RegexMatcher(_compile_regex(body, f"'E@{body}'", expr, body_pos))
    return _grain_regex_matcher(body, expr, body_pos)


def compile_target(expr: str, tgt_type: str | TargetType = "glob") -> Matcher:
    """Parse ``expr`` as a target of ``tgt_type`` into a reusable :class:`Matcher`.

    Raises :class:`TargetError` for an unknown type, an empty expression, or a malformed one
    (unbalanced parentheses, dangling operator, unknown ``X@`` prefix, bad regex, ...).
    """
    try:
        kind = TargetType(tgt_type)
    except ValueError:
        choices = ", ".join(t.value for t in TargetType)
        raise TargetError(f"unknown target type {tgt_type!r} (expected one of {choices})") from None
    if not isinstance(expr, str):
        raise TargetError(f"target expression must be a string, got {type(expr).__name__}")
    if not expr.strip():
        raise TargetError(f"empty target expression {expr!r}")
    body = expr.strip()
    pos = len(expr) - len(expr.lstrip())
    if kind is TargetType.GLOB:
        return GlobMatcher(body)
    if kind is TargetType.LIST:
        return _list_matcher(body, expr, pos)
    if kind is TargetType.GRAIN:
        return _grain_matcher(body, expr, pos)
    return _Parser(expr).parse()


def match_minions(
    expr: str, tgt_type: str | TargetType, minions: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Return the sorted ids of ``minions`` (id -> grains) targeted by ``expr``."""
    matcher = compile_target(expr, tgt_type)
    return sorted(mid for mid, grains in minions.items() if matcher.matches(mid, grains))
