"""Rules and the runbooks and states they name are loaded and checked together, at reload:
a rule naming what does not exist fails the reload with its file:line (the old rules stay),
and a firing runs the runbook as loaded, never re-reading it from disk."""

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saline.lab.lab import Lab
from tests.support import saline, wait_for


@pytest.fixture
def files(lab: Lab) -> Iterator[list[Path]]:
    written: list[Path] = []
    yield written
    for path in written:
        path.unlink(missing_ok=True)
    saline(lab, "reactor", "reload")


def _write(files: list[Path], path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    files.append(path)


def _rule(lab: Lab, files: list[Path], name: str, action: str) -> Path:
    path = lab.directory / "reactors" / f"{name}.yaml"
    _write(files, path, f"- name: {name}\n  on: test/policy/{name}\n  do:\n    - {action}\n")
    return path


def _reload(lab: Lab) -> tuple[int, str]:
    proc = saline(lab, "reactor", "reload")
    return proc.returncode, proc.stdout + proc.stderr


def _rule_names(lab: Lab) -> set[str]:
    listed = json.loads(saline(lab, "reactor", "list", "--out", "json").stdout)
    return {r["name"] for r in listed["rules"]}


def _history(lab: Lab, rule: str) -> list[dict[str, Any]]:
    proc = saline(lab, "reactor", "history", "--rule", rule, "--out", "json")
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def test_a_rule_naming_a_missing_runbook_fails_the_reload(lab: Lab, files: list[Path]) -> None:
    _rule(lab, files, "keeper", "run: {target: be1, function: test.ping}")
    assert _reload(lab)[0] == 0
    path = _rule(lab, files, "no-book", "orchestrate: {runbook: nowhere/to_be_found}")
    code, out = _reload(lab)
    assert code == 1
    assert f"{path}:1: rule 'no-book': do.0.orchestrate.runbook" in out
    assert "no runbook 'nowhere/to_be_found'" in out and "kept the" in out
    names = _rule_names(lab)
    assert "keeper" in names and "no-book" not in names


def test_a_runbook_that_does_not_validate_fails_the_reload(lab: Lab, files: list[Path]) -> None:
    _write(files, lab.directory / "runbooks" / "broken_book.yaml", "name: broken_book\nsteps: []\n")
    path = _rule(lab, files, "bad-book", "orchestrate: {runbook: broken_book}")
    code, out = _reload(lab)
    assert code == 1 and f"{path}:1: rule 'bad-book': do.0.orchestrate.runbook" in out
    assert "broken_book" in out and "steps" in out


def test_vars_a_runbook_does_not_take_fail_the_reload(lab: Lab, files: list[Path]) -> None:
    book = "name: takes_n\nvars: {n: 1}\nsteps:\n  - run: {target: be1, function: test.ping}\n"
    _write(files, lab.directory / "runbooks" / "takes_n.yaml", book)
    _rule(lab, files, "bad-vars", "orchestrate: {runbook: takes_n, vars: {m: 2}}")
    code, out = _reload(lab)
    assert code == 1 and "do.0.orchestrate.vars: runbook takes_n has no var m" in out


def test_a_rule_naming_a_missing_state_fails_until_it_exists(lab: Lab, files: list[Path]) -> None:
    path = _rule(lab, files, "no-state", "state: {target: be1, states: [policy.absent]}")
    code, out = _reload(lab)
    assert code == 1
    assert f"{path}:1: rule 'no-state': do.0.state.states: no state 'policy.absent'" in out
    state = lab.directory / "states" / "policy" / "absent.yaml"
    _write(files, state, "policy-noop:\n  test.nop: []\n")
    code, out = _reload(lab)
    assert code == 0, out
    assert "no-state" in _rule_names(lab)


def test_a_firing_runs_the_runbook_as_loaded(lab: Lab, files: list[Path]) -> None:
    book = lab.directory / "runbooks" / "as_loaded.yaml"
    _write(files, book, "name: as_loaded\nsteps:\n  - run: {target: be1, function: test.ping}\n")
    _rule(lab, files, "as-loaded", "orchestrate: {runbook: as_loaded}")
    assert _reload(lab)[0] == 0
    book.write_text("this is: [not a runbook\n")  # broken after loading: not read again
    with lab.client() as master:
        master.request("fire", tag="test/policy/as-loaded", data={})
    wait_for(lambda: [r["outcome"] for r in _history(lab, "as-loaded")] == ["ok"], 20, "ran")
    code, out = _reload(lab)
    assert code == 1 and "as_loaded" in out and "as-loaded" in _rule_names(lab)
