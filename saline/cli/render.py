"""Human output of the CLI: colours, one minion's return, state runs, durations and totals.

Colours are click styles, SaltStack's habit: green ok, yellow changed, cyan would change
(test mode), red failed, magenta skipped (not run: failhard or a failed requisite). Whether
they reach the screen is set once per command by :func:`colour_options`: on a terminal by
default, off with ``--no-color`` or a non-empty ``NO_COLOR`` (https://no-color.org), on
with ``--force-color``; otherwise ``click.echo`` strips them (a pipe, a file).

``--state-output`` (SaltStack's ``state_output``) shapes a state run: ``full`` prints
every state with its comment and changes; ``terse`` one line per state (outcome, state,
name, duration; for a failed or skipped state also why); ``changes`` full output for states
that changed, would change or failed, the terse line for the others.
"""

import functools
import json
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import click

from saline.cli.common import dump
from saline.durations import format_duration

#: the colour of each outcome
COLOURS: Final = {
    "ok": "green",
    "succeeded": "green",
    "changed": "yellow",
    "would change": "cyan",
    "failed": "red",
    "skipped": "magenta",
    "timed out": "red",
    "not reached": "yellow",
}

#: each state is counted once, in one of these (in this order in the summary)
STATE_KINDS: Final = ("ok", "changed", "would change", "failed", "skipped")

#: the values of ``--state-output``
STATE_OUTPUTS: Final = ("full", "terse", "changes")

#: the state functions whose returns print as a state run
STATE_RUNS: Final = frozenset({"state.apply"})

_F = TypeVar("_F", bound=Callable[..., Any])


def paint(text: str, kind: str) -> str:
    """``text`` in the colour of outcome ``kind`` (as it is when the kind has none)."""
    colour = COLOURS.get(kind)
    return click.style(text, fg=colour) if colour else text


def colour_setting(no_color: bool, force_color: bool, environ: Mapping[str, str]) -> bool | None:
    """click's ``color`` for a command: False off, True on, None when stdout decides (a
    terminal gets colours). The flags win over ``NO_COLOR``, as no-color.org asks."""
    if no_color and force_color:
        raise click.UsageError("give --no-color or --force-color, not both")
    if no_color:
        return False
    if force_color:
        return True
    if environ.get("NO_COLOR"):
        return False
    return None


def colour_options(fn: _F) -> _F:
    """Add ``--no-color`` and ``--force-color`` to a command; they set ``ctx.color``, which
    every ``click.echo`` of the command follows."""

    @functools.wraps(fn)
    def wrapper(*args: Any, no_color: bool, force_color: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.color = colour_setting(no_color, force_color, os.environ)
        return fn(*args, **kwargs)

    with_flags = click.option(
        "--force-color", is_flag=True, help="colours even when stdout is not a terminal"
    )(wrapper)
    with_flags = click.option(
        "--no-color", is_flag=True, help="no colours (also: NO_COLOR set to anything)"
    )(with_flags)
    return with_flags  # type: ignore[return-value]


def duration_text(ms: float) -> str:
    """``12 ms`` under a second, else ``1.5s``, ``4m59.5s``."""
    return f"{ms:.0f} ms" if ms < 1000 else format_duration(ms / 1000)


def error_lines(value: Any) -> list[str] | None:
    """The executor's failed return ``{"error": kind, "message": text}`` as one readable
    line (a traceback, when there is one, indented below it); None for anything else."""
    if not (isinstance(value, dict) and set(value) == {"error", "message"}):
        return None
    kind, message = value["error"], value["message"]
    if not (isinstance(kind, str) and isinstance(message, str)):
        return None
    first, _, rest = message.strip().partition("\n")
    tag = "" if kind == "execution_error" else f" [{kind}]"
    return [paint(f"error: {first}{tag}", "failed"), *("  " + line for line in rest.splitlines())]


@dataclass(frozen=True)
class Returned:
    """One minion's return, as human output prints it."""

    minion: str
    value: Any
    success: bool
    #: how long the function ran on the minion; None when not known (a stored return)
    duration_ms: float | None = None


def _header(r: Returned) -> str:
    name = paint(r.minion, "succeeded" if r.success else "failed")
    mark = "" if r.success else "  " + paint("[FAILED]", "failed")
    took = "" if r.duration_ms is None else f"  ({duration_text(r.duration_ms)})"
    return f"{name}:{mark}{took}"


def _indented(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


def render_return(r: Returned) -> str:
    """One minion's return: its id (and duration), then the value indented below."""
    value = r.value
    errors = error_lines(value)
    if errors is not None:
        body = errors
    elif isinstance(value, dict | list):
        body = dump(value, "yaml").splitlines()
    elif isinstance(value, str) and "\n" in value:
        body = value.splitlines()
    else:
        body = [str(value)]
    return "\n".join([_header(r), *_indented(body)])


def state_kind(chunk: dict[str, Any]) -> str:
    """What one state result was: ok, changed, would change, failed or skipped (not run)."""
    if chunk.get("ran") is False:
        return "skipped"
    result = chunk.get("result")
    if result is False:
        return "failed"
    if result is None:
        return "would change"
    return "changed" if chunk.get("changes") else "ok"


@dataclass
class StateCounts:
    """States counted by kind, and the time they ran."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATE_KINDS, 0))
    ms: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, other: "StateCounts") -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
        self.ms += other.ms

    def text(self) -> str:
        """``3 states: 1 ok, 1 changed, 1 failed; run time 4 ms`` (ok and failed always
        named, the other kinds when there are any)."""
        shown = ", ".join(
            paint(f"{n} {kind}", kind if n else "")
            for kind, n in self.counts.items()
            if n or kind in ("ok", "failed")
        )
        states = "state" if self.total == 1 else "states"
        return f"{self.total} {states}: {shown}; run time {duration_text(self.ms)}"


def _one_line(comment: str) -> str:
    first, _, rest = comment.strip().partition("\n")
    more = len(rest.splitlines())
    return f"{first} (+{more} lines)" if more else first


def state_lines(chunk: dict[str, Any], kind: str, detailed: bool) -> list[str]:
    """One state. ``detailed``: outcome, state, name, comment and duration on a line, the
    rest of a multi-line comment and the changes below it. Otherwise one line (SaltStack's
    terse): outcome, state, name and duration, and for a failed or skipped state why."""
    label = {"failed": "FAILED", "skipped": "SKIPPED"}.get(kind, kind)
    mark = paint(f"{label:>12}", kind)
    comment = str(chunk.get("comment") or "")
    first, _, rest = comment.strip().partition("\n")
    if detailed:
        why = f": {first}"
    else:
        why = f": {_one_line(comment)}" if kind in ("failed", "skipped") and comment else ""
    took = f"({chunk.get('duration_ms') or 0:.0f} ms)"
    lines = [f"  {mark}  {chunk.get('state')} {chunk.get('name')}{why}  {took}"]
    if not detailed:
        return lines
    pad = " " * 16
    lines.extend(pad + line for line in rest.splitlines())
    if chunk.get("changes"):
        lines.extend(pad + line for line in dump(chunk["changes"], "yaml").splitlines())
    return lines


def render_states(r: Returned, mode: str = "full") -> tuple[str, StateCounts | None]:
    """One minion's state run in ``mode`` (a ``STATE_OUTPUTS`` value), with its counts and
    run time; (text, None) when the run did not happen (an error, shown as one line)."""
    if not isinstance(r.value, list):
        return render_return(r), None
    lines = [_header(r)]
    counts = StateCounts()
    for chunk in r.value:
        if not isinstance(chunk, dict):
            lines.append(f"  {chunk!r}")
            continue
        kind = state_kind(chunk)
        counts.counts[kind] += 1
        counts.ms += float(chunk.get("duration_ms") or 0)
        detailed = mode == "full" or (
            mode == "changes" and kind in ("changed", "would change", "failed")
        )
        lines.extend(state_lines(chunk, kind, detailed))
    lines.append("  " + counts.text())
    return "\n".join(lines), counts


class ReturnPrinter:
    """Prints each minion's return as it arrives (:meth:`line`), then :meth:`totals`."""

    def line(self, r: Returned) -> str:
        return render_return(r)

    def totals(self) -> str | None:
        """What to print after the last return (None: nothing)."""
        return None


class StatePrinter(ReturnPrinter):
    """State runs, in a ``--state-output`` mode; totals over minions when more than one ran."""

    def __init__(self, mode: str = "full") -> None:
        self.mode = mode
        self.all = StateCounts()
        self.runs = 0

    def line(self, r: Returned) -> str:
        text, counts = render_states(r, self.mode)
        if counts is not None:
            self.all.add(counts)
            self.runs += 1
        return text

    def totals(self) -> str | None:
        if self.runs < 2:
            return None
        return f"total on {self.runs} minions: {self.all.text()}"


def printer_for(function: str, state_output: str = "full") -> ReturnPrinter:
    """How ``function``'s returns print: as a state run, or as plain values."""
    return StatePrinter(state_output) if function in STATE_RUNS else ReturnPrinter()


def summary_counts(parts: list[tuple[int, str]]) -> str:
    """``2 targeted, 1 succeeded, 1 failed, ...``: each count coloured when not zero."""
    return ", ".join(paint(f"{n} {label}", label if n else "") for n, label in parts)


def call_text(fun: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """A job's call as it would be typed: ``cmd.run 'ls -l' cwd=/tmp``."""

    def word(value: Any) -> str:
        return shlex.quote(value) if isinstance(value, str) else json.dumps(value, default=repr)

    words = [fun, *map(word, args), *(f"{k}={word(v)}" for k, v in kwargs.items())]
    return " ".join(words)


def event_line(event: dict[str, Any]) -> str:
    """``#1234 12:00:01.250 chef/backend/be1/pg/out_of_sync be1 {...}``: the seq first (what
    ``saline events --since`` takes), then time, tag, who sent it, and the data."""
    seq = event.get("seq")
    number = click.style(f"#{'-' if seq is None else seq}", fg="yellow")
    stamp = datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S.%f")[:-3]
    tag = click.style(event["tag"], bold=True)
    who = click.style(event.get("minion") or "master", fg="cyan")
    data = json.dumps(event["data"], sort_keys=True, default=repr)
    return f"{number} {stamp} {tag} {who} {data}"
