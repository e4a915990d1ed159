"""One target-type definition: the CLI, the master config and runbooks all take TargetType."""

import click
import pytest
from pydantic import ValidationError

from master.config import ScheduleEntry
from reactors.runbook import RunbookError, load_runbook
from saline.cli.run import run
from saline.cli.state import apply
from saline.targeting import TargetType

NAMES = ["glob", "list", "grain", "compound"]


def test_the_names_are_unchanged() -> None:
    assert [t.value for t in TargetType] == NAMES


@pytest.mark.parametrize("command", [run, apply])
def test_cli_choices_come_from_target_type(command: click.Command) -> None:
    [option] = [p for p in command.params if p.name == "tgt_type"]
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == NAMES
    assert option.default == "glob" and type(option.default) is str


def test_schedule_entry_takes_the_same_strings_and_keeps_them_strings() -> None:
    entry = ScheduleEntry.model_validate({"name": "n", "tgt_type": "compound", "every": 5})
    assert entry.tgt_type is TargetType.COMPOUND
    assert isinstance(entry.tgt_type, str) and f"{entry.tgt_type}" == "compound"
    assert entry.model_dump(mode="json")["tgt_type"] == "compound"
    assert ScheduleEntry.model_validate({"name": "n", "every": 5}).tgt_type == "glob"
    with pytest.raises(ValidationError, match="tgt_type"):
        ScheduleEntry.model_validate({"name": "n", "tgt_type": "pcre", "every": 5})


def test_runbook_steps_take_the_same_strings() -> None:
    text = "name: x\nsteps:\n  - run: {target: 'a,b', tgt_type: list, function: f}\n"
    assert load_runbook(text, "rb.yaml").steps[0].spec.tgt_type is TargetType.LIST
    with pytest.raises(RunbookError, match="tgt_type"):
        load_runbook(text.replace("list", "pcre"), "rb.yaml")
