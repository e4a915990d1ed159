"""reactors/policy.py: rules and the runbooks and states they name, loaded together."""

import textwrap
from pathlib import Path

import pytest

from reactors.policy import RuleIndex, load_policy
from reactors.rules import RuleError, load_rules
from reactors.runbook import RunbookError
from reactors.shipped import SHIPPED_RULES, SHIPPED_RUNBOOKS
from states.shipped import SHIPPED_STATES


def _tree(tmp_path: Path, rules: str, **runbooks: str) -> tuple[Path, Path]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(textwrap.dedent(rules))
    (tmp_path / "books").mkdir()
    for name, text in runbooks.items():
        (tmp_path / "books" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return tmp_path / "rules", tmp_path / "books"


RULES = """\
- name: first
  on: a/*
  do: [{orchestrate: {runbook: book}}]
- name: second
  on: a/b
  do: [{orchestrate: {runbook: book}}, {state: {target: x, states: [app]}}]
"""
BOOK = "name: book\nsteps:\n  - run: {target: x, function: test.ping}\n"


def test_each_named_runbook_is_loaded_once_with_the_rules(tmp_path: Path) -> None:
    rules, books = _tree(tmp_path, RULES, book=BOOK)
    policy = load_policy([rules], [books])
    assert [r.name for r in policy.rules] == ["first", "second"]
    assert list(policy.runbooks) == ["book"] and policy.runbook("book").name == "book"
    assert policy.sources == {"first": f"{rules}/r.yaml:1", "second": f"{rules}/r.yaml:4"}
    with pytest.raises(RunbookError, match="not loaded with the rules"):
        policy.runbook("other")


def test_states_are_checked_when_the_tree_is_known(tmp_path: Path) -> None:
    rules, books = _tree(tmp_path, RULES, book=BOOK)
    with pytest.raises(RuleError, match=r"r\.yaml:4: rule 'second': do\.1\.state\.states"):
        load_policy([rules], [books], state_exists=lambda name: False)
    assert load_policy([rules], [books], state_exists={"app"}.__contains__).rules
    # rules that ship with their own state tree are not checked against the operator's
    assert load_policy([rules], [books], lambda name: False, ships_states=rules).rules


def test_the_shipped_rules_name_shipped_runbooks_and_states() -> None:
    def shipped_state(name: str) -> bool:
        base = SHIPPED_STATES / name.replace(".", "/")
        return base.with_suffix(".yaml").is_file() or (base / "init.yaml").is_file()

    policy = load_policy([SHIPPED_RULES], [SHIPPED_RUNBOOKS], shipped_state)
    assert policy.runbooks and len(policy.rules) == len(load_rules([SHIPPED_RULES]))


def test_the_index_matches_globs_and_caches_per_tag(tmp_path: Path) -> None:
    rules, books = _tree(tmp_path, RULES, book=BOOK)
    index = RuleIndex(load_policy([rules], [books]).rules)
    assert [r.name for r in index.matching("a/b")] == ["first", "second"]
    assert [r.name for r in index.matching("a/c")] == ["first"]
    assert index.matching("b/a") == [] and index.matching("a/b") is index.matching("a/b")
    assert RuleIndex([]).matching("a/b") == []
