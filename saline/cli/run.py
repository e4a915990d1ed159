"""``saline run``: one execution function on the targeted minions, returns as they arrive.

Exit codes (also in the README):

* 0  every targeted minion returned success
* 1  saline error (no master, bad config, bad target, refused by the ACL)
* 2  usage error
* 3  the target matched no accepted minion
* 10 + bits otherwise: +1 some minion returned failure, +2 some timed out (killed at
  the function's time limit, or still running when ``-t`` ran out: the job goes on),
  +4 some were not reached (offline). 11..17 name every combination.
"""

import fnmatch
import json
import re
import sys
import time
from typing import Any

import click

from saline.cli.common import BATCH, OUT_CHOICE, client, dump, resolve_target, target_shortcuts
from saline.cli.render import (
    STATE_OUTPUTS,
    Returned,
    ReturnPrinter,
    colour_options,
    duration_text,
    paint,
    printer_for,
    summary_counts,
)
from saline.targeting import TargetType

EXIT_OK = 0
EXIT_NO_MATCH = 3
EXIT_BASE = 10
BIT_FAILED, BIT_TIMED_OUT, BIT_NOT_REACHED = 1, 2, 4

_KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?$")  # "0600" stays text (a mode)


def parse_value(text: str) -> Any:
    """Numbers, booleans, null and JSON lists/maps become typed; everything else stays text."""
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def split_arguments(raw: tuple[str, ...]) -> tuple[list[Any], dict[str, Any]]:
    """ARG ... KEY=VALUE ...: a word is a keyword argument when it starts with ``name=``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in raw:
        match = _KWARG.match(word)
        if match:
            kwargs[match.group(1)] = parse_value(match.group(2))
        else:
            args.append(parse_value(word))
    return args, kwargs


def exit_code(summary: dict[str, Any]) -> int:
    if not summary["minions"]:
        return EXIT_NO_MATCH
    bits = (
        (BIT_FAILED if summary["failed"] else 0)
        | (BIT_TIMED_OUT if summary["timed_out"] else 0)
        | (BIT_NOT_REACHED if summary["not_reached"] else 0)
    )
    return EXIT_BASE + bits if bits else EXIT_OK


class Progress:
    """Progress on stderr: a live counter on a terminal; on a pipe, the master's once-a-second
    reports of a long job as plain lines (so logs of a slow rollout show it moving)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def tick(self) -> None:
        self.done += 1
        if self.enabled and self.tty and self.total > 1:
            elapsed = time.monotonic() - self.started
            sys.stderr.write(f"\r[{self.done}/{self.total} answered, {elapsed:.1f}s]")
            sys.stderr.flush()

    def report(self, message: dict[str, Any]) -> None:
        if not self.enabled:
            return
        running = ", ".join(message["running"][:8]) + (
            " ..." if len(message["running"]) > 8 else ""
        )
        line = (
            f"[{message['answered']}/{message['total']} answered, {message['elapsed']:.0f}s;"
            f" running: {running or '-'}; waiting: {message['waiting']}]"
        )
        if self.tty:
            self.clear()
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            sys.stderr.write(line + "\n")

    def clear(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\r\033[K")


@click.command()
@click.argument("target")
@click.argument("function")
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-T",
    "--tgt-type",
    type=click.Choice([t.value for t in TargetType]),
    default=TargetType.GLOB.value,
    help="how TARGET is read (default glob on the minion id)",
)
@target_shortcuts
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    default=None,
    metavar="S",
    help="seconds this command waits for the returns (default: the master's job_timeout);"
    " the job goes on after it: `saline jobs wait JID`. The function's own time limit"
    " on the minion is timeout=S among the arguments (else its declared default)",
)
@click.option("-b", "--batch", type=BATCH, default=None, help="at most N (or N%) at a time")
@click.option(
    "--batch-wait",
    type=click.FloatRange(min=0, max=3600),
    default=None,
    metavar="S",
    help="with --batch: wait S seconds after a minion returns before starting the next",
)
@click.option("--out", type=OUT_CHOICE, default="human", help="output format")
@click.option(
    "--state-output",
    type=click.Choice(STATE_OUTPUTS),
    default="full",
    help="state.apply in human output: every state (full), one line each (terse),"
    " or full only for those that changed or failed (changes)",
)
@click.option(
    "--async",
    "background",
    is_flag=True,
    help="print the jid at once and leave; `saline jobs wait JID` gets the returns",
)
@click.option(
    "--secret",
    "secret",
    multiple=True,
    metavar="NAME",
    help="this KEY=VALUE's value (or the Nth ARG, from 0) is a secret: never stored or shown"
    " (names like password, *_token, secret, key are secrets already)",
)
@colour_options
@click.pass_context
def run(
    ctx: click.Context,
    target: str,
    function: str,
    arguments: tuple[str, ...],
    tgt_type: str,
    timeout: float | None,
    batch: int | str | None,
    batch_wait: float | None,
    out: str,
    secret: tuple[str, ...],
    shortcut: str | None,
    background: bool,
    state_output: str,
) -> None:
    """Run FUNCTION with ARG ... KEY=VALUE ... on the minions TARGET matches.

    \b
    Examples:
      saline run '*' test.ping
      saline run -T grain role:backend cmd.run 'uname -r'
      saline run -T compound 'G@role:backend and not be3' service.status etcd
      saline run -T list be1,be2 cmd.run "ls /tmp" cwd=/ --batch 1
      saline run -C 'G@role:frontend or be1' grains.get role
      saline run be1 cmd.run -- ls -l /tmp      (after --, words starting with - are arguments)
      saline run be1 state.apply test=true --state-output changes
      saline run -G role:frontend chef_server.reconfigure --batch 1 --batch-wait 30
      saline run fe1 chef_server.upgrade timeout=5400 -t 60   (then: saline jobs wait JID)
    """
    target, tgt_type = resolve_target(target, tgt_type, shortcut)
    args, kwargs = split_arguments(arguments)
    if batch_wait is not None and batch is None:
        raise click.UsageError(
            "--batch-wait needs --batch (without it every minion starts at once)"
        )
    if background:
        fields = run_fields(
            target, tgt_type, function, args, kwargs, timeout, batch, secret, batch_wait
        )
        ctx.exit(start_async(ctx, fields, out))
    printer = printer_for(function, state_output)
    code = execute(
        ctx,
        target,
        tgt_type,
        function,
        args,
        kwargs,
        timeout,
        batch,
        out,
        printer,
        secret,
        batch_wait=batch_wait,
    )
    ctx.exit(code)


def run_fields(
    target: str,
    tgt_type: str,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    batch: int | str | None,
    secret: tuple[str, ...],
    batch_wait: float | None = None,
) -> dict[str, Any]:
    """The client API's ``run`` request. ``timeout`` is how long the client waits; the
    function's own time limit is the ``timeout=`` keyword in ``kwargs``.

    :raises click.UsageError: a ``timeout=`` that is not a number of seconds.
    """
    from saline.protocol import timeout_keyword

    try:
        timeout_keyword(kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    return {
        "target": target,
        "tgt_type": tgt_type,
        "fun": function,
        "args": args,
        "kwargs": kwargs,
        "timeout": timeout,
        "batch": batch,
        "batch_wait": batch_wait,
        "secret": list(secret),
    }


def start_async(ctx: click.Context, fields: dict[str, Any], out: str) -> int:
    """Start the job and print its jid; the master sees it through without us."""
    with client(ctx) as master:
        master.send("run", **fields, background=True)
        job = master.receive()  # the job as matched, then "started"
        master.receive()
    if not job["minions"]:
        click.echo("no minion matched the target", err=True)
        return EXIT_NO_MATCH
    if out == "human":
        click.echo(job["jid"])
        click.echo(f"started on {len(job['minions'])}: `saline jobs wait {job['jid']}`", err=True)
    else:
        click.echo(dump({k: job[k] for k in ("jid", "minions", "missing")}, out))
    return EXIT_OK


def execute(
    ctx: click.Context,
    target: str,
    tgt_type: str,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    batch: int | str | None,
    out: str,
    printer: ReturnPrinter | None = None,
    secret: tuple[str, ...] = (),
    batch_wait: float | None = None,
) -> int:
    """Run a job through the master, print returns as they arrive (human output: each with
    ``printer``, then its totals and the job's summary); returns the exit code. After
    ``timeout`` seconds it stops waiting; the job goes on (``running`` in the summary)."""
    printer = printer or ReturnPrinter()
    returns: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    fields = run_fields(
        target, tgt_type, function, args, kwargs, timeout, batch, secret, batch_wait
    )
    started = time.monotonic()
    with client(ctx, timeout=None) as master:
        stream = master.stream("run", **fields)
        progress = Progress(0, enabled=False)
        for message in stream:
            kind = message["type"]
            if kind == "job":
                progress = Progress(len(message["minions"]), enabled=out == "human")
                if out == "human" and message["missing"]:
                    click.echo(f"not reached (offline): {', '.join(message['missing'])}", err=True)
            elif kind == "ret":
                progress.tick()
                returns[message["id"]] = {
                    "success": message["success"],
                    "retcode": message["retcode"],
                    "return": message["return"],
                }
                if out == "human":
                    progress.clear()
                    returned = Returned(
                        message["id"],
                        message["return"],
                        message["success"],
                        message.get("duration_ms"),
                    )
                    click.echo(printer.line(returned))
            elif kind in ("timed_out", "not_reached"):
                progress.tick()
            elif kind == "progress":
                progress.report(message)
            elif kind == "done":
                summary = message
        progress.clear()
    if not summary["minions"]:
        hint = _pending_hint(ctx, target, tgt_type)
        if hint:
            click.echo(hint, err=True)
    if out == "human":
        totals = printer.totals()
        if totals:
            click.echo(totals)
        print_summary(summary, (time.monotonic() - started) * 1000)
    else:
        document = {
            "jid": summary["jid"],
            "returns": returns,
            "missing": summary["not_reached"],
            "timed_out": summary["timed_out"],
            "running": summary.get("running", []),
        }
        click.echo(dump(document, out))
    return exit_code(summary)


def _pending_hint(ctx: click.Context, target: str, tgt_type: str) -> str | None:
    """When nothing matched: the pending keys the target names, and how to accept them."""
    if tgt_type not in ("glob", "list"):
        return None
    with client(ctx) as master:
        pending = master.request("status")["keys"]["pending"]
    names = target.split(",") if tgt_type == "list" else [target]
    waiting = sorted(m for m in pending if any(fnmatch.fnmatchcase(m, n) for n in names))
    if not waiting:
        return None
    if len(waiting) == 1:
        return (
            f"the key of {waiting[0]} is pending: accept it with `saline key accept {waiting[0]}`"
        )
    listed = ", ".join(waiting)
    return f"the keys of {listed} are pending: accept them with `saline key accept ID` (or --all)"


def print_summary(summary: dict[str, Any], elapsed_ms: float | None = None) -> None:
    """The job's end: who timed out (stdout), then its counts and wall time (stderr)."""
    if not summary["minions"]:
        click.echo("no minion matched the target", err=True)
        return
    running = summary.get("running", [])
    for minion_id in summary["timed_out"]:
        if minion_id in running:  # the client stopped waiting; the minion did not
            why = f"STILL RUNNING when this stopped waiting: `saline jobs wait {summary['jid']}`"
        else:
            why = "TIMED OUT on the minion: no result within its time limit (or it went offline)"
        click.echo(f"{minion_id}:\n    " + paint(why, "failed"))
    parts = summary_counts(
        [
            (len(summary["minions"]), "targeted"),
            (len(summary["succeeded"]), "succeeded"),
            (len(summary["failed"]), "failed"),
            (len(summary["timed_out"]), "timed out"),
            (len(summary["not_reached"]), "not reached"),
        ]
    )
    took = "" if elapsed_ms is None else f"; took {duration_text(elapsed_ms)}"
    click.echo(f"jid {summary['jid']}: {parts}{took}", err=True)
    for key, label in (
        ("timed_out", "timed out"),
        ("running", "still running (the job goes on)"),
        ("not_reached", "not reached (offline)"),
    ):
        if summary.get(key):
            click.echo(f"{label}: {', '.join(summary[key])}", err=True)
