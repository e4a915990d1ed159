"""The CLI's human output (saline/cli/render.py): colours and when they are on, errors as
one line, --state-output modes, durations and totals, event lines with their seq."""

from typing import Any

import click
import pytest

from saline.cli.render import (
    Returned,
    ReturnPrinter,
    StatePrinter,
    call_text,
    colour_setting,
    duration_text,
    error_lines,
    event_line,
    printer_for,
    render_return,
    render_states,
    state_kind,
)

GREEN, YELLOW, RED, CYAN, MAGENTA = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[36m", "\x1b[35m"


@pytest.mark.parametrize(
    ("no_color", "force_color", "environ", "expected"),
    [
        (False, False, {}, None),  # stdout decides: a terminal gets colours
        (False, False, {"NO_COLOR": ""}, None),  # empty means unset (no-color.org)
        (False, False, {"NO_COLOR": "1"}, False),
        (False, False, {"NO_COLOR": "no"}, False),  # any non-empty value
        (True, False, {}, False),
        (False, True, {}, True),
        (False, True, {"NO_COLOR": "1"}, True),  # the flag wins over the environment
    ],
)
def test_colour_setting(
    no_color: bool, force_color: bool, environ: dict[str, str], expected: bool | None
) -> None:
    assert colour_setting(no_color, force_color, environ) is expected


def test_no_color_and_force_color_together_is_a_usage_error() -> None:
    with pytest.raises(click.UsageError, match="not both"):
        colour_setting(True, True, {})


def test_an_executor_error_is_one_line_with_its_kind_unless_plain() -> None:
    message = "bad.yaml:2: a: cmd.run: \"echo 'hi' > /tmp/x\" uses shell syntax (`>`)"
    [line] = error_lines({"error": "execution_error", "message": message}) or []
    assert click.unstyle(line) == f"error: {message}"
    [line] = error_lines({"error": "bad_arguments", "message": "test.echo TEXT: missing"}) or []
    assert click.unstyle(line) == "error: test.echo TEXT: missing [bad_arguments]"
    assert line.startswith(RED)


def test_a_traceback_goes_below_its_error_line() -> None:
    lines = error_lines({"error": "KeyError", "message": "'x'\nTraceback ...\n  File a.py"})
    assert lines is not None
    assert [click.unstyle(x) for x in lines] == [
        "error: 'x' [KeyError]",
        "  Traceback ...",
        "    File a.py",
    ]


@pytest.mark.parametrize(
    "value", [{"error": "x"}, {"error": "x", "message": "m", "more": 1}, {"error": 1, "message": 2}]
)
def test_other_maps_are_not_errors(value: dict[str, Any]) -> None:
    assert error_lines(value) is None


def test_a_return_prints_its_minion_its_duration_and_its_value() -> None:
    text = click.unstyle(render_return(Returned("be1", "hi", True, 12.4)))
    assert text == "be1:  (12 ms)\n    hi"
    text = click.unstyle(render_return(Returned("be1", "a\nb", False, None)))
    assert text == "be1:  [FAILED]\n    a\n    b"
    error = {"error": "execution_error", "message": "no such file: /x"}
    assert click.unstyle(render_return(Returned("fe1", error, False, 2000))) == (
        "fe1:  [FAILED]  (2s)\n    error: no such file: /x"
    )
    assert click.unstyle(render_return(Returned("fe1", {"a": [1]}, True))) == (
        "fe1:\n    a:\n    - 1"
    )


def test_minion_ids_are_green_when_they_succeeded_and_red_when_not() -> None:
    assert render_return(Returned("be1", "x", True)).startswith(f"{GREEN}be1")
    assert render_return(Returned("be1", "x", False)).startswith(f"{RED}be1")


def test_durations() -> None:
    assert duration_text(0.4) == "0 ms"
    assert duration_text(999) == "999 ms"
    assert duration_text(1500) == "1.5s"
    assert duration_text(299_500) == "4m59.5s"


# -- state runs -------------------------------------------------------------------------


def _chunk(state: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"state": state, "name": name, "id": name, "ran": True, "duration_ms": 2.0, **fields}


RUN = [
    _chunk("file.managed", "/etc/app.conf", result=True, changes={}, comment="up to date"),
    _chunk("file.managed", "/etc/new.conf", result=True, changes={"diff": "+x"}, comment="created"),
    _chunk(
        "cmd.run", "false", result=False, changes={"retcode": 1}, comment="command failed\nrc 1"
    ),
    _chunk("cmd.run", "after", result=False, ran=False, changes={}, comment="requisite failed"),
]


def _lines(mode: str, run: list[dict[str, Any]] = RUN) -> list[str]:
    text, _ = render_states(Returned("be1", run, False, 45.0), mode)
    return click.unstyle(text).splitlines()


def test_state_kinds() -> None:
    assert [state_kind(c) for c in RUN] == ["ok", "changed", "failed", "skipped"]
    assert state_kind(_chunk("cmd.run", "x", result=None, changes={"command": "x"})) == (
        "would change"
    )


def test_full_prints_every_state_with_its_comment_and_changes() -> None:
    assert _lines("full") == [
        "be1:  [FAILED]  (45 ms)",
        "            ok  file.managed /etc/app.conf: up to date  (2 ms)",
        "       changed  file.managed /etc/new.conf: created  (2 ms)",
        "                diff: +x",
        "        FAILED  cmd.run false: command failed  (2 ms)",
        "                rc 1",
        "                retcode: 1",
        "       SKIPPED  cmd.run after: requisite failed  (2 ms)",
        "  4 states: 1 ok, 1 changed, 1 failed, 1 skipped; run time 8 ms",
    ]


def test_terse_prints_one_line_per_state_and_why_a_state_failed_or_was_skipped() -> None:
    assert _lines("terse") == [
        "be1:  [FAILED]  (45 ms)",
        "            ok  file.managed /etc/app.conf  (2 ms)",
        "       changed  file.managed /etc/new.conf  (2 ms)",
        "        FAILED  cmd.run false: command failed (+1 lines)  (2 ms)",
        "       SKIPPED  cmd.run after: requisite failed  (2 ms)",
        "  4 states: 1 ok, 1 changed, 1 failed, 1 skipped; run time 8 ms",
    ]


def test_changes_prints_in_full_only_what_changed_or_failed() -> None:
    assert _lines("changes") == [
        "be1:  [FAILED]  (45 ms)",
        "            ok  file.managed /etc/app.conf  (2 ms)",
        "       changed  file.managed /etc/new.conf: created  (2 ms)",
        "                diff: +x",
        "        FAILED  cmd.run false: command failed  (2 ms)",
        "                rc 1",
        "                retcode: 1",
        "       SKIPPED  cmd.run after: requisite failed  (2 ms)",
        "  4 states: 1 ok, 1 changed, 1 failed, 1 skipped; run time 8 ms",
    ]
    dry = [_chunk("cmd.run", "x", result=None, changes={"command": "x"}, comment="would run x")]
    assert _lines("changes", dry)[1:3] == [
        "  would change  cmd.run x: would run x  (2 ms)",
        "                command: x",
    ]


def test_state_outcomes_are_coloured_like_saltstack() -> None:
    text, _ = render_states(Returned("be1", RUN, False, None), "full")
    assert f"{GREEN}          ok" in text
    assert f"{YELLOW}     changed" in text
    assert f"{RED}      FAILED" in text
    assert f"{MAGENTA}     SKIPPED" in text
    assert f"{GREEN}1 ok" in text and f"{RED}1 failed" in text
    dry = [_chunk("cmd.run", "x", result=None, changes={"command": "x"}, comment="would run x")]
    text, _ = render_states(Returned("be1", dry, True, None), "full")
    assert f"{CYAN}would change" in text
    assert "0 failed" in click.unstyle(text) and f"{RED}0 failed" not in text  # zero: plain


def test_a_state_run_that_did_not_happen_is_one_error_line() -> None:
    error = {"error": "execution_error", "message": "undef.yaml:3: undefined in template: x"}
    text, counts = render_states(Returned("be1", error, False, 5.0))
    assert counts is None
    assert click.unstyle(text).splitlines() == [
        "be1:  [FAILED]  (5 ms)",
        "    error: undef.yaml:3: undefined in template: x",
    ]


def test_totals_over_minions_when_more_than_one_ran_states() -> None:
    printer = StatePrinter("terse")
    printer.line(Returned("be1", RUN, False, 10.0))
    assert printer.totals() is None  # one minion: its own summary says it all
    printer.line(Returned("be2", RUN[:2], True, 10.0))
    printer.line(Returned("fe1", {"error": "timeout", "message": "m"}, False, 10.0))
    totals = printer.totals()
    assert totals is not None
    assert click.unstyle(totals) == (
        "total on 2 minions: 6 states: 2 ok, 2 changed, 1 failed, 1 skipped; run time 12 ms"
    )


def test_state_apply_returns_print_as_state_runs_others_as_values() -> None:
    assert isinstance(printer_for("state.apply", "terse"), StatePrinter)
    assert type(printer_for("state.show")) is ReturnPrinter
    assert type(printer_for("test.ping")) is ReturnPrinter


# -- jobs and events --------------------------------------------------------------------


def test_a_call_prints_as_it_would_be_typed() -> None:
    assert call_text("cmd.run", ["ls -l", 3], {"cwd": "/tmp", "shell": True}) == (
        "cmd.run 'ls -l' 3 cwd=/tmp shell=true"
    )
    assert call_text("test.ping", [], {}) == "test.ping"


def test_an_event_line_starts_with_the_seq_that_since_takes() -> None:
    event = {"seq": 1234, "ts": 0.25, "tag": "chef/backend/be1/pg/out_of_sync", "minion": "be1"}
    line = click.unstyle(event_line({**event, "data": {"b": 1, "a": "x"}}))
    assert line.startswith("#1234 ")
    _, stamp, tag, who, data = line.split(" ", 4)
    assert stamp.endswith(".250") and len(stamp) == len("12:00:01.250")
    assert (tag, who, data) == ("chef/backend/be1/pg/out_of_sync", "be1", '{"a": "x", "b": 1}')
    master = click.unstyle(event_line({**event, "seq": None, "minion": None, "data": {}}))
    assert master.startswith("#- ") and " master {}" in master
