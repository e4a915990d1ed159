"""The one duration grammar (saline.durations), as rules, runbooks and configs read it."""

import math

import pytest
from pydantic import BaseModel, ValidationError

from reactors.rules import Rule
from reactors.runbook import RunbookError, load_runbook
from saline.durations import Duration, PositiveDuration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("250ms", 0.25),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("45", 45.0),
        ("0.5", 0.5),
        (" 10 s ", 10.0),  # white space around it and between number and unit
        ("0s", 0.0),
        (7, 7.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_every_form_parses(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize(
    "bad",
    ["5x", "-1s", "", "1h30", "1m30s", "s", "1.s", "5 m s", "1D", -3, True, False, None,
     math.nan, math.inf, [5], "inf", "nan"],
)  # fmt: skip
def test_anything_else_is_refused_naming_a_duration(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_short_forms() -> None:
    assert [format_duration(s) for s in (0, 12, 12.34, 90, 300, 299.5, 3600, 93600, -4)] == [
        "0s",
        "12s",
        "12.3s",
        "1m30s",
        "5m",
        "4m59.5s",
        "1h",
        "1d2h",
        "0s",
    ]


def test_single_unit_forms_round_trip() -> None:
    for text in ("12s", "5m", "1h", "1d", "12.5s"):
        assert format_duration(parse_duration(text)) == text


class _Model(BaseModel):
    any_: Duration = 0.0
    positive: PositiveDuration = 1.0


def test_field_types() -> None:
    assert _Model.model_validate({"any_": "0s", "positive": "1d"}) == _Model(
        any_=0.0, positive=86400.0
    )
    with pytest.raises(ValidationError, match="greater than 0"):
        _Model.model_validate({"positive": "0s"})
    with pytest.raises(ValidationError, match="invalid duration 'soon'"):
        _Model.model_validate({"any_": "soon"})


def test_rules_and_runbooks_both_accept_days() -> None:
    rule = Rule.model_validate(
        {"name": "r", "on": "a/b", "do": [{"fire": {"tag": "x"}}], "cooldown": "1d"}
    )
    assert rule.cooldown == 86400.0
    runbook = load_runbook(
        "name: x\nsteps:\n  - run: {target: a, function: f, timeout: 1d}\n", "rb.yaml"
    )
    assert runbook.steps[0].spec.timeout == 86400.0
    with pytest.raises(RunbookError, match=r"rb\.yaml:3: steps\[0\]\.run\.timeout: invalid dur"):
        load_runbook("name: x\nsteps:\n  - run: {target: a, function: f, timeout: 1w}\n", "rb.yaml")
