"""Tests for saline.targeting: glob, list, grain and compound target expressions."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saline.errors import SalineError, TargetError
from saline.targeting import (
    AndMatcher,
    GlobMatcher,
    Matcher,
    NotMatcher,
    OrMatcher,
    TargetType,
    compile_target,
    match_minions,
)

MINIONS: dict[str, dict[str, Any]] = {
    "fe2": {"role": "frontend", "os": {"family": "RedHat", "release": 9}, "cpu_count": 4},
    "be1": {
        "role": "backend",
        "os": {"family": "Debian", "release": 12},
        "roles": ["db", "cache"],
        "cpu_count": 2,
        "virtual": True,
        "ipv6": "fe80::1",
    },
    "be2": {"role": "backend", "os": {"family": "Debian"}, "roles": ["db"], "virtual": False},
    "be3": {"role": "backend", "os": "linux", "roles": []},
    "fe1": {"role": "frontend", "os": {"family": "Debian"}, "cpu_count": 2},
    "web-01.example.com": {},
}
ALL = sorted(MINIONS)


def compound(expr: str) -> list[str]:
    return match_minions(expr, "compound", MINIONS)


def target_error(expr: str, tgt_type: str = "compound") -> str:
    with pytest.raises(TargetError) as info:
        compile_target(expr, tgt_type)
    return str(info.value)


# --- types and API -----------------------------------------------------------------------------


def test_target_type_values() -> None:
    assert [t.value for t in TargetType] == ["glob", "list", "grain", "compound"]


def test_default_type_is_glob() -> None:
    assert compile_target("be*") == GlobMatcher("be*")


def test_enum_and_string_types_are_equivalent() -> None:
    assert compile_target("G@role:backend", TargetType.COMPOUND) == compile_target(
        "G@role:backend", "compound"
    )


def test_matcher_is_abstract() -> None:
    with pytest.raises(TypeError):
        Matcher()  # type: ignore[abstract]


def test_target_error_is_a_saline_error() -> None:
    with pytest.raises(SalineError):
        compile_target("", "glob")


def test_result_is_sorted_regardless_of_mapping_order() -> None:
    assert list(MINIONS) != ALL
    assert match_minions("*", "glob", MINIONS) == ALL


def test_no_minions_gives_empty_list() -> None:
    assert match_minions("*", "glob", {}) == []


def test_matcher_is_reusable_across_minions() -> None:
    matcher = compile_target("G@role:backend and not be3", "compound")
    assert matcher.matches("be1", MINIONS["be1"])
    assert not matcher.matches("be3", MINIONS["be3"])
    assert not matcher.matches("fe1", MINIONS["fe1"])


# --- glob --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("*", ALL),
        ("be*", ["be1", "be2", "be3"]),
        ("?e1", ["be1", "fe1"]),
        ("[bf]e2", ["be2", "fe2"]),
        ("be[!1]", ["be2", "be3"]),
        ("*.example.com", ["web-01.example.com"]),
        ("be1", ["be1"]),
        ("  be1  ", ["be1"]),
        ("nomatch*", []),
    ],
)
def test_glob(expr: str, expected: list[str]) -> None:
    assert match_minions(expr, "glob", MINIONS) == expected


def test_glob_is_case_sensitive() -> None:
    assert match_minions("BE*", "glob", MINIONS) == []


def test_glob_ignores_grains() -> None:
    assert match_minions("role:backend", "glob", MINIONS) == []


# --- list --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("be1,fe1", ["be1", "fe1"]),
        (" be1 ,  fe2,be3 ", ["be1", "be3", "fe2"]),
        ("be1", ["be1"]),
        ("be1,,fe1,", ["be1", "fe1"]),
        ("be1,unknown", ["be1"]),
        ("be*", []),  # list entries are exact ids, not globs
        ("BE1", []),
    ],
)
def test_list(expr: str, expected: list[str]) -> None:
    assert match_minions(expr, "list", MINIONS) == expected


# --- grain -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("role:backend", ["be1", "be2", "be3"]),
        ("role:front*", ["fe1", "fe2"]),
        ("role:Backend", []),  # case-sensitive
        ("os:family:Debian", ["be1", "be2", "fe1"]),
        ("os:family:Red*", ["fe2"]),
        ("os:release:12", ["be1"]),
        ("os:*", ["be1", "be2", "be3", "fe1", "fe2"]),  # nested dict: only '*' matches it
        ("os:Debian", []),
        ("os:linux", ["be3"]),
        ("os:family:*:x", []),  # path walks past a string value
        ("roles:cache", ["be1"]),  # list grain: any element
        ("roles:db", ["be1", "be2"]),
        ("roles:*", ["be1", "be2"]),  # empty list has no element to match
        ("cpu_count:2", ["be1", "fe1"]),  # int compared via str()
        ("cpu_count:[24]", ["be1", "fe1", "fe2"]),
        ("virtual:True", ["be1"]),
        ("virtual:False", ["be2"]),
        ("ipv6:fe80::1", ["be1"]),  # value may contain the delimiter
        ("ipv6:fe80:*", ["be1"]),
        ("missing:*", []),
        ("role:", []),
    ],
)
def test_grain(expr: str, expected: list[str]) -> None:
    assert match_minions(expr, "grain", MINIONS) == expected


def test_grain_on_tuple_and_set_values() -> None:
    minions: dict[str, dict[str, Any]] = {
        "a": {"tags": ("x", "y")},
        "b": {"tags": {"y", "z"}},
        "c": {"tags": "xyz"},
    }
    assert match_minions("tags:y", "grain", minions) == ["a", "b"]
    assert match_minions("tags:x*", "grain", minions) == ["a", "c"]


# --- compound ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("G@role:backend and not be3", ["be1", "be2"]),
        ("L@be1,fe1 or web*", ["be1", "fe1", "web-01.example.com"]),
        ("( G@role:frontend or be1 ) and not fe2", ["be1", "fe1"]),
        ("(G@role:frontend or be1) and not fe2", ["be1", "fe1"]),
        ("((G@role:frontend) or (be1)) and (not fe2)", ["be1", "fe1"]),
        ("G@os:family:Debian and G@roles:db", ["be1", "be2"]),
        ("G@cpu_count:2 and G@role:frontend", ["fe1"]),
        ("E@be[12]", ["be1", "be2"]),
        ("E@be", []),  # regex must match the whole id
        ("E@web-\\d+\\..*", ["web-01.example.com"]),
        ("E@(be|fe)1", ["be1", "fe1"]),
        ("(E@(be|fe)1)", ["be1", "fe1"]),
        ("not E@(be|fe)1 and E@.e.", ["be2", "be3", "fe2"]),
        ("P@role:back.*", ["be1", "be2", "be3"]),
        ("P@os:family:(Deb|Red).*", ["be1", "be2", "fe1", "fe2"]),
        ("P@roles:(?:cache|x)", ["be1"]),
        ("P@cpu_count:[4-9]", ["fe2"]),
        ("P@os:.*", ["be3"]),  # a nested dict never matches a regex
        ("not *", []),
        ("not not be1", ["be1"]),
        ("be1 and be1 and be1", ["be1"]),
        ("be1 or fe1 or web*", ["be1", "fe1", "web-01.example.com"]),
    ],
)
def test_compound(expr: str, expected: list[str]) -> None:
    assert compound(expr) == expected


def test_precedence_not_and_or_structure() -> None:
    a, b, c = GlobMatcher("a"), GlobMatcher("b"), GlobMatcher("c")
    assert compile_target("a or b and not c", "compound") == OrMatcher(
        (a, AndMatcher((b, NotMatcher(c))))
    )
    assert compile_target("not a and b or c", "compound") == OrMatcher(
        (AndMatcher((NotMatcher(a), b)), c)
    )
    assert compile_target("(a or b) and c", "compound") == AndMatcher((OrMatcher((a, b)), c))
    assert compile_target("not (a or b)", "compound") == NotMatcher(OrMatcher((a, b)))


def test_precedence_behaviour() -> None:
    # and binds tighter than or: be1 or (fe* and not fe2), not (be1 or fe*) and not fe2
    assert compound("be1 or fe* and not fe2") == ["be1", "fe1"]
    assert compound("(be1 or fe*) and not fe2") == ["be1", "fe1"]
    assert compound("be1 or (fe* and not fe1)") == ["be1", "fe2"]
    # not binds tighter than and
    assert compound("not be* and not web*") == ["fe1", "fe2"]


def test_attached_and_spaced_parentheses_compile_identically() -> None:
    spaced = compile_target("( ( be1 or fe1 ) and not E@(x) )", "compound")
    attached = compile_target("((be1 or fe1) and not E@(x))", "compound")
    assert spaced == attached


def test_same_letter_words_are_globs_not_operators() -> None:
    minions: dict[str, Mapping[str, Any]] = {"android": {}, "order": {}, "note": {}}
    assert match_minions("android or order", "compound", minions) == ["android", "order"]
    assert match_minions("not*", "compound", minions) == ["note"]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tgt_type", ["bogus", "GLOB", "pcre", ""])
def test_unknown_target_type(tgt_type: str) -> None:
    message = target_error("*", tgt_type)
    assert "unknown target type" in message
    assert repr(tgt_type) in message
    assert "glob, list, grain, compound" in message


@pytest.mark.parametrize("tgt_type", list(TargetType))
@pytest.mark.parametrize("expr", ["", "   ", "\t\n"])
def test_empty_expression(expr: str, tgt_type: TargetType) -> None:
    assert "empty target expression" in target_error(expr, tgt_type)


def test_non_string_expression() -> None:
    with pytest.raises(TargetError, match="must be a string"):
        compile_target(["be1"], "list")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expr", "problem", "position"),
    [
        ("(be1 or fe1", "'(' is never closed", 0),
        ("be1 and ((fe1)", "'(' is never closed", 8),
        ("be1)", "unexpected ')'", 3),
        ("be1 ) or fe1", "unexpected ')'", 4),
        (")", "unexpected ')'", 0),
        ("be1 and", "dangling 'and': nothing follows it", 4),
        ("be1 or", "dangling 'or': nothing follows it", 4),
        ("not", "dangling 'not': nothing follows it", 0),
        ("be1 and not", "dangling 'not': nothing follows it", 8),
        ("(be1 and) or fe1", "dangling 'and': nothing follows it", 5),
        ("and be1", "dangling 'and': nothing precedes it", 0),
        ("or be1", "dangling 'or': nothing precedes it", 0),
        ("(or be1)", "dangling 'or': nothing precedes it", 1),
        ("be1 and or fe1", "dangling 'and': followed by 'or'", 4),
        ("not and be1", "dangling 'not': followed by 'and'", 0),
        ("()", "empty parentheses", 0),
        ("be1 and ( )", "empty parentheses", 8),
        ("be1 fe1", "expected 'and' or 'or' before 'fe1'", 4),
        ("(be1 fe1)", "expected 'and' or 'or' before 'fe1'", 5),
        ("be1 (fe1)", "expected 'and' or 'or' before '('", 4),
        ("be1 AND fe1", "operators are lowercase", 4),
        ("be1 not fe1", "unexpected 'not'", 4),
        ("X@foo", "unknown matcher prefix 'X@'", 0),
        ("be1 or I@role:x", "unknown matcher prefix 'I@'", 7),
        ("g@role:x", "unknown matcher prefix 'g@'", 0),
        ("G@", "empty 'G@' matcher", 0),
        ("be1 and E@", "empty 'E@' matcher", 8),
        ("E@(be", "invalid regex", 2),
        ("E@be[", "invalid regex", 2),
        ("be1 or E@a{99999999999}", "invalid regex", 9),
        ("P@role:(back", "invalid regex", 2),
        ("G@role", "needs the form 'key:value'", 2),
        ("G@:backend", "empty key", 2),
        ("L@,", "names no minion ids", 2),
    ],
)
def test_compound_errors_name_problem_and_position(expr: str, problem: str, position: int) -> None:
    message = target_error(expr)
    assert problem in message
    assert f"at position {position} " in message
    assert repr(expr) in message


def test_regex_error_includes_reason() -> None:
    assert "unterminated subpattern" in target_error("E@(be")


def test_grain_regex_accepts_colon_inside_regex() -> None:
    # The only compiling reading of "role:(?:x)" is key "role" and regex "(?:x)".
    matcher = compile_target("P@role:(?:back|front)end", "compound")
    assert matcher.matches("x", {"role": "backend"})
    assert not matcher.matches("x", {"role": "sideend"})


@pytest.mark.parametrize(
    ("expr", "problem"),
    [("role", "needs the form 'key:value'"), (":backend", "empty key")],
)
def test_grain_type_errors(expr: str, problem: str) -> None:
    message = target_error(expr, "grain")
    assert problem in message
    assert "at position 0 " in message


def test_list_type_without_ids() -> None:
    assert "names no minion ids" in target_error(" , ,", "list")


@pytest.mark.parametrize("expr", ["(" * 150 + "be1" + ")" * 150, "not " * 150 + "be1"])
def test_deep_nesting_is_rejected_not_crashing(expr: str) -> None:
    assert "nested deeper than" in target_error(expr)


def test_moderate_nesting_is_fine() -> None:
    assert compound("(" * 50 + "be1" + ")" * 50) == ["be1"]
    assert compound("not " * 50 + "be1") == ["be1"]


# --- properties --------------------------------------------------------------------------------

# Ids and glob words are drawn from letters that cannot spell "and", "or", "not" or "X@".
ID_ALPHABET = "abce0123-."
ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=5)
ROLES = ["web", "db", "cache"]
minion_sets = st.dictionaries(
    ids,
    st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES), "tags": st.lists(st.sampled_from(ROLES))}
    ),
    max_size=10,
)
globs = st.text(alphabet="abc0*?", min_size=1, max_size=4)
terms = st.one_of(
    globs,
    st.sampled_from(ROLES).map(lambda r: f"G@role:{r}"),
    st.sampled_from(ROLES).map(lambda r: f"G@tags:{r[0]}*"),
    st.lists(ids, min_size=1, max_size=3).map(lambda xs: "L@" + ",".join(xs)),
    st.sampled_from(["E@a.*", "E@[0-9]+", "E@(a|b)c?"]),
)


def sel(expr: str, minions: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return set(match_minions(expr, "compound", minions))


@given(minion_sets, terms, terms)
def test_or_is_union(minions: dict[str, dict[str, Any]], a: str, b: str) -> None:
    assert sel(f"{a} or {b}", minions) == sel(a, minions) | sel(b, minions)


@given(minion_sets, terms, terms)
def test_and_is_intersection(minions: dict[str, dict[str, Any]], a: str, b: str) -> None:
    assert sel(f"{a} and {b}", minions) == sel(a, minions) & sel(b, minions)


@given(minion_sets, terms)
def test_not_is_complement(minions: dict[str, dict[str, Any]], a: str) -> None:
    assert sel(f"not {a}", minions) == set(minions) - sel(a, minions)


@given(minion_sets, terms, terms, terms)
def test_and_binds_tighter_than_or(
    minions: dict[str, dict[str, Any]], a: str, b: str, c: str
) -> None:
    sa, sb, sc = sel(a, minions), sel(b, minions), sel(c, minions)
    assert sel(f"{a} or {b} and {c}", minions) == sa | (sb & sc)
    assert sel(f"({a} or {b}) and {c}", minions) == (sa | sb) & sc
    assert sel(f"not {a} and {b}", minions) == (set(minions) - sa) & sb


@given(minion_sets, terms, terms)
def test_de_morgan(minions: dict[str, dict[str, Any]], a: str, b: str) -> None:
    assert sel(f"not ({a} or {b})", minions) == sel(f"not {a} and not {b}", minions)


@given(minion_sets, st.data())
def test_list_of_random_subset_returns_that_subset(
    minions: dict[str, dict[str, Any]], data: st.DataObject
) -> None:
    subset = data.draw(st.sets(st.sampled_from(sorted(minions)))) if minions else set()
    expr = ",".join(sorted(subset)) or "nobody-here"
    assert match_minions(expr, "list", minions) == sorted(subset)
    assert match_minions(f"L@{expr}", "compound", minions) == sorted(subset)


@given(minion_sets, ids)
def test_literal_glob_and_list_agree(minions: dict[str, dict[str, Any]], minion_id: str) -> None:
    assert match_minions(minion_id, "glob", minions) == match_minions(minion_id, "list", minions)


@given(
    st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=8),
    st.one_of(
        st.integers(), st.booleans(), st.text(alphabet=string.ascii_letters + ":.", max_size=8)
    ),
)
def test_grain_literal_value_matches_itself(key: str, value: object) -> None:
    grains = {key: value}
    assert compile_target(f"{key}:{value}", "grain").matches("m", grains)
    assert compile_target(f"{key}:{value}", "grain").matches("m", {key: [0, value]})
    assert not compile_target(f"{key}:{value}", "grain").matches("m", {f"{key}x": value})


@given(st.text(max_size=40))
def test_arbitrary_compound_input_only_raises_target_error(expr: str) -> None:
    try:
        matcher = compile_target(expr, "compound")
    except TargetError as exc:
        assert str(exc)
    else:
        assert isinstance(matcher.matches("be1", MINIONS["be1"]), bool)
