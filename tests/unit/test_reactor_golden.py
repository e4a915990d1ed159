"""Golden reactor cases: a rule file, a view and a sequence of steps with expected decisions.

Each ``tests/cases/reactor/*.yaml`` holds ``rules`` (rule file text), ``view`` (``inventory``:
id -> grains, optional ``offline``), optional ``max_chain_depth`` and ``steps``. A step sets
the simulated clock (``at``) and does one thing — ``event``, ``due``, ``finish`` (a label),
``approve`` (a label), ``pause``/``resume``, ``offline``/``online`` (ids), ``observe``
(``{minion, beacon, data}``: the view's latest observation) — then compares the
decisions it produced against ``expect`` (a list; only the fields given are compared, and
``as: LABEL`` remembers the decision's reaction id for later steps; ``$LABEL`` in an expected
reason stands for it).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from reactors.engine import approve, due, evaluate, finish
from reactors.model import Decision, Event
from reactors.rules import load_rules
from reactors.state import ReactorState
from reactors.view import StaticView

CASES = Path(__file__).parent.parent / "cases" / "reactor"


def _compare(
    got: list[Decision], expect: list[dict[str, Any]], labels: dict[str, str], where: str
) -> None:
    assert len(got) == len(expect), f"{where}: {[d.reason for d in got]}"
    for decision, want in zip(got, expect, strict=True):
        want = dict(want)
        if "reason" in want:  # $label stands for a remembered (random) reaction id
            want["reason"] = string.Template(want["reason"]).safe_substitute(labels)
        label = want.pop("as", None)
        actions = want.pop("actions", None)
        dumped = decision.model_dump(mode="json")
        assert {k: dumped[k] for k in want} == want, where
        if actions is not None:
            assert [a["action"] for a in dumped["actions"]] == actions, where
        if decision.verdict in ("fire", "dry_run", "await_approval"):
            assert decision.reaction_id, where
        if label is not None:
            assert decision.reaction_id is not None, where
            labels[label] = decision.reaction_id


def _run_case(case: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(case.read_text())
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(spec["rules"])
    rules = load_rules([tmp_path])
    inventory = spec["view"]["inventory"]
    online = set(inventory) - set(spec["view"].get("offline", []))
    view = StaticView(inventory=inventory, online_ids=online)
    state = ReactorState()
    labels: dict[str, str] = {}
    for index, step in enumerate(spec["steps"]):
        now = float(step.get("at", 0))
        where = f"{case.name} step {index}"
        got: list[Decision] = []
        if "event" in step:
            event = Event.model_validate({"id": f"e{index}", **step["event"]})
            got = evaluate(
                event, rules, view, state, now, max_chain_depth=spec.get("max_chain_depth", 3)
            )
        elif "due" in step:
            got = due(state, rules, view, now)
        elif "finish" in step:
            said = finish(state, labels[step["finish"]], now, ok=step.get("ok", True))
            assert "succeeded" in said or "failed" in said, where
        elif "approve" in step:
            got = [approve(state, labels[step["approve"]], view, now)]
        elif "pause" in step:
            state.paused = bool(step["pause"])
        elif "observe" in step:  # a beacon's latest observation, as the cluster view keeps it
            seen = step["observe"]
            view.observations.setdefault(seen["minion"], {})[seen["beacon"]] = seen["data"]
        elif "offline" in step:
            online -= set(step["offline"])
        elif "online" in step:
            online |= set(step["online"])
        else:
            raise AssertionError(f"{where}: unknown step {step}")
        _compare(got, step.get("expect", []), labels, where)
        # the master persists the state after every step: it must survive a round trip
        state = ReactorState.model_validate_json(state.model_dump_json())


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_golden_case(case: Path, tmp_path: Path) -> None:
    _run_case(case, tmp_path)


def test_golden_cases_cover_every_guard() -> None:
    names = {p.stem for p in CASES.glob("*.yaml")}
    assert {
        "throttle_once_within",
        "throttle_once_after",
        "cooldown_default",
        "duplicate_in_flight",
        "max_concurrent",
        "quorum",
        "flap",
        "chain_depth",
        "ignore_own",
        "dry_run",
        "approve",
        "paused",
        "injection",
    } <= names
