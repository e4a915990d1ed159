"""Rule loading: models, durations, and errors that name file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from reactors.rules import (
    FireAction,
    OrchestrateAction,
    Rule,
    RuleError,
    RunAction,
    StateAction,
    format_duration,
    load_rules,
    parse_duration,
)
from saline.targeting import TargetType

EXAMPLE = """\
- name: restart-stopped-service
  on: saline/beacon/*/service/stopped
  when: "event.data.name in ['etcd', 'postgresql']"
  do:
    - run: {target: "{{ event.minion }}", function: service.start, args: ["{{ event.data.name }}"]}
    - state: {target: "G@role:backend", tgt_type: compound, states: [chef_backend], test: false}
    - orchestrate: {runbook: chef_ha/refollow, vars: {node: "{{ event.minion }}"}}
    - fire: {tag: "chef/backend/{{ event.minion }}/healing", data: {step: restart}}
  throttle: {key: "{{ event.minion }}:{{ event.data.name }}", once_within: 5m}
  guard: {group: "G@role:backend", max_concurrent: 1}
  disruptive: false
  mode: act
  cooldown: 60s
  ignore_own: true
  flap: {max: 3, window: 10m}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    write(tmp_path, "rules.yaml", text)
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path])
    return str(info.value)


def test_example_rule_loads_into_typed_models(tmp_path: Path) -> None:
    write(tmp_path, "chef.yaml", EXAMPLE)
    (rule,) = load_rules([tmp_path])
    assert rule.name == "restart-stopped-service"
    assert rule.on == "saline/beacon/*/service/stopped"  # YAML 1.1 reads a bare `on:` as True
    assert [type(a) for a in rule.do] == [RunAction, StateAction, OrchestrateAction, FireAction]
    run = rule.do[0]
    assert isinstance(run, RunAction)
    assert run.tgt_type is TargetType.GLOB and run.args == ["{{ event.data.name }}"]
    assert rule.throttle is not None and rule.throttle.once_within == 300.0
    assert rule.throttle.once_after is None
    assert rule.guard is not None and rule.guard.max_concurrent == 1
    assert rule.cooldown == 60.0 and rule.flap is not None and rule.flap.window == 600.0


def test_defaults_are_safe(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", "- {name: r, on: a/b, do: [{fire: {tag: x}}]}\n")
    (rule,) = load_rules([tmp_path])
    assert (rule.mode, rule.cooldown, rule.ignore_own, rule.disruptive) == (
        "act",
        60.0,
        True,
        False,
    )
    assert rule.flap is not None and (rule.flap.max, rule.flap.window) == (3, 600.0)


def test_flap_can_be_turned_off(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", "- {name: r, on: a/b, do: [{fire: {tag: x}}], flap: null}\n")
    assert load_rules([tmp_path])[0].flap is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- name: r\n  on: a/b\n", "rules.yaml:1: rule 'r': do: Field required"),
        (
            "- name: r\n  on: a/b\n  do: [{fire: {tag: x}}]\n  cooldown: 5x\n",
            "rules.yaml:4: rule 'r': cooldown: invalid duration '5x'",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - fire: {tag: x}\n    - reboot: {now: true}\n",
            "rules.yaml:5: rule 'r': do.1: unknown action 'reboot'",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - run:\n        target: be1\n",
            "rules.yaml:4: rule 'r': do.0.run.function: Field required",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - escalate: {reason: x}\n    - fire: {tag: y}\n",
            "rules.yaml:1: rule 'r': (rule): do: escalate is its rule's only action",
        ),
        (
            "- name: r\n  on: a/b\n  mode: approve\n  do:\n    - escalate: {reason: x}\n",
            "rules.yaml:1: rule 'r': (rule): mode: an escalate rule acts on nothing",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - escalate: {reason: '{{ event.data'}\n",
            "rules.yaml:4: rule 'r': do.0.escalate.reason: template syntax error",
        ),
        (
            '- name: r\n  on: a/b\n  when: "event.data.name =="\n  do: [{fire: {tag: x}}]\n',
            "rules.yaml:3: rule 'r': when: expression syntax error",
        ),
        (
            "- name: r\n  on: a/b\n  when: evnt.tag == 'x'\n  do: [{fire: {tag: x}}]\n",
            "rules.yaml:3: rule 'r': when: unknown name 'evnt'",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - fire:\n        tag: x\n"
            "        data: {a: '{{ event.data.x '}\n",
            "rules.yaml:6: rule 'r': do.0.fire.data.a: template syntax error",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - run:\n        function: test.ping\n"
            "        target: '{{ event.minion }}'\n        tgt_type: compound\n",
            "rules.yaml:6: rule 'r': do.0.run.target: a templated target is a literal minion id",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - run:\n        function: '{{ event.data.fn }}'\n"
            "        target: be1\n",
            "rules.yaml:5: rule 'r': do.0.run.function: String should match pattern",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - run: {function: test.ping, target: 'be1 or be2'}\n",
            "rules.yaml:4: rule 'r': do.0.run.target: a glob target cannot contain spaces",
        ),
        (
            "- name: r\n  on: a/b\n  do:\n    - run: {function: test.ping, target: 'L@be1'}\n",
            "rules.yaml:4: rule 'r': do.0.run.target: 'L@be1' reads differently as compound",
        ),
        (
            "- name: r\n  on: a/b\n  do: [{fire: {tag: x}}]\n  guard: {group: 'G@role:x and'}\n",
            "rules.yaml:4: rule 'r': guard.group: dangling 'and'",
        ),
        (
            "- name: r\n  on: a/b\n  do: [{fire: {tag: x}}]\n  disruptive: true\n",
            "rules.yaml:1: rule 'r': (rule): a disruptive rule needs guard.group",
        ),
        (
            "- name: r\n  on: a/b\n  do: [{fire: {tag: x}}]\n  throttle:\n"
            "    once_within: 1m\n    once_after: 1m\n",
            "rules.yaml:4: rule 'r': throttle: choose one of once_within, once_after and grace, "
            "not once_within and once_after",
        ),
        (
            "- name: r\n  on: a/b\n  do: [{fire: {tag: x}}]\n  cooldwn: 5\n",
            "rules.yaml:4: rule 'r': cooldwn: Extra inputs are not permitted",
        ),
        ("- name: r\n  on: [a\n", "rules.yaml:3: invalid YAML"),
        ("name: r\non: a/b\n", "rules.yaml:1: a rule file is a YAML list of rules"),
        ("- just a string\n", "rules.yaml:1: a rule is a mapping"),
        (
            "- name: bad/name\n  on: a/b\n  do: [{fire: {tag: x}}]\n",
            "rules.yaml:1: rule 'bad/name': name: String should match pattern",
        ),
    ],
)
def test_load_errors_name_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'rules.yaml'}:"), message
    assert expected in message, message


def test_duplicate_rule_names_across_files_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- {name: heal, on: a/b, do: [{fire: {tag: x}}]}\n")
    write(
        tmp_path,
        "b.yaml",
        "- {name: other, on: a/b, do: [{fire: {tag: x}}]}\n"
        "- {name: heal, on: c/d, do: [{fire: {tag: y}}]}\n",
    )
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path])
    assert str(info.value) == (
        f"{tmp_path / 'b.yaml'}:2: name: duplicate rule name 'heal' "
        f"(first defined at {tmp_path / 'a.yaml'}:1)"
    )


def test_directories_load_sorted_yaml_only(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "- {name: second, on: a, do: [{fire: {tag: x}}]}\n")
    write(tmp_path, "a.yaml", "- {name: first, on: a, do: [{fire: {tag: x}}]}\n")
    write(tmp_path, "notes.txt", "not rules")
    write(tmp_path, "empty.yaml", "")
    extra = tmp_path / "more"
    extra.mkdir()
    write(extra, "z.yaml", "- {name: third, on: a, do: [{fire: {tag: x}}]}\n")
    assert [r.name for r in load_rules([tmp_path, extra])] == ["first", "second", "third"]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no such rule file or directory"):
        load_rules([tmp_path / "nope"])


def test_direct_validation_compiles_templates_too() -> None:
    with pytest.raises(ValidationError, match="when: expression syntax error"):
        Rule.model_validate({"name": "r", "on": "a", "when": "1 +", "do": [{"fire": {"tag": "x"}}]})


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (7, 7.0),
        (1.5, 1.5),
        ("45", 45.0),
    ],
)
def test_parse_duration(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("bad", ["5x", "-1s", -3, True, "", None, "1h30"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 12, 12.34, 90, 300, 299.5, 3600)] == [
        "0s",
        "12s",
        "12.3s",
        "1m30s",
        "5m",
        "4m59.5s",
        "1h",
    ]
