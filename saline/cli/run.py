"""``saline run``: one execution function on the targeted minions, returns as they arrive.

Exit codes (also in the README):

* 0  every targeted minion returned success
* 1  saline error (no master, bad config, bad target, refused by the ACL)
* 2  usage error
* 3  the target matched no accepted minion
* 10 + bits otherwise: +1 some minion returned failure, +2 some timed out,
  +4 some were not reached (offline). 11..17 name every combination.
"""

import fnmatch
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from saline.cli.common import BATCH, OUT_CHOICE, client, dump, resolve_target, target_shortcuts
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


def _human_return(minion_id: str, value: Any, success: bool) -> str:
    mark = "" if success else "  [FAILED]"
    if isinstance(value, dict | list):
        body = "\n".join("    " + line for line in dump(value, "yaml").splitlines())
        return f"{minion_id}:{mark}\n{body}"
    if isinstance(value, str) and "\n" in value:
        return f"{minion_id}:{mark}\n" + "\n".join("    " + line for line in value.splitlines())
    return f"{minion_id}:{mark}\n    {value}"


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
@click.option("-t", "--timeout", type=float, default=None, help="seconds to wait per minion")
@click.option("-b", "--batch", type=BATCH, default=None, help="at most N (or N%) at a time")
@click.option("--out", type=OUT_CHOICE, default="human", help="output format")
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
@click.pass_context
def run(
    ctx: click.Context,
    target: str,
    function: str,
    arguments: tuple[str, ...],
    tgt_type: str,
    timeout: float | None,
    batch: int | str | None,
    out: str,
    secret: tuple[str, ...],
    shortcut: str | None,
    background: bool,
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
    """
    target, tgt_type = resolve_target(target, tgt_type, shortcut)
    args, kwargs = split_arguments(arguments)
    if background:
        fields = run_fields(target, tgt_type, function, args, kwargs, timeout, batch, secret)
        ctx.exit(start_async(ctx, fields, out))
    code = execute(
        ctx, target, tgt_type, function, args, kwargs, timeout, batch, out, secret=secret
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
) -> dict[str, Any]:
    """The client API's ``run`` request."""
    return {
        "target": target,
        "tgt_type": tgt_type,
        "fun": function,
        "args": args,
        "kwargs": kwargs,
        "timeout": timeout,
        "batch": batch,
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


#: prints one minion's return in human output: (minion id, return value, success) -> text
Renderer = Callable[[str, Any, bool], str]


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
    render: Renderer | None = None,
    secret: tuple[str, ...] = (),
) -> int:
    """Run a job through the master, print returns as they arrive; returns the exit code."""
    render = render or _human_return
    returns: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    fields = run_fields(target, tgt_type, function, args, kwargs, timeout, batch, secret)
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
                    click.echo(render(message["id"], message["return"], message["success"]))
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
        _print_summary(summary)
    else:
        document = {
            "jid": summary["jid"],
            "returns": returns,
            "missing": summary["not_reached"],
            "timed_out": summary["timed_out"],
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


def _print_summary(summary: dict[str, Any]) -> None:
    if not summary["minions"]:
        click.echo("no minion matched the target", err=True)
        return
    for minion_id in summary["timed_out"]:
        click.echo(f"{minion_id}:\n    TIMED OUT: no return before the timeout")
    parts = [
        f"{len(summary['minions'])} targeted",
        f"{len(summary['succeeded'])} succeeded",
        f"{len(summary['failed'])} failed",
        f"{len(summary['timed_out'])} timed out",
        f"{len(summary['not_reached'])} not reached",
    ]
    click.echo(f"jid {summary['jid']}: " + ", ".join(parts), err=True)
    for key, label in (("timed_out", "timed out"), ("not_reached", "not reached (offline)")):
        if summary[key]:
            click.echo(f"{label}: {', '.join(summary[key])}", err=True)
