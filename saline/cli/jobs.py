"""``saline jobs list | show JID | wait JID``: the master's job store."""

import time
from datetime import datetime
from typing import Any

import click

from saline.cli.common import OUT_CHOICE, client, dump
from saline.cli.render import (
    STATE_OUTPUTS,
    Returned,
    ReturnPrinter,
    call_text,
    colour_options,
    paint,
    printer_for,
    summary_counts,
)

_STATE_OUTPUT = click.option(
    "--state-output",
    type=click.Choice(STATE_OUTPUTS),
    default="full",
    help="a state run in human output: full, terse (one line per state), or changes",
)


@click.group()
def jobs() -> None:
    """Stored jobs and their returns."""


@jobs.command("list")
@click.option(
    "-n", "--limit", type=click.IntRange(1, 10_000), default=20, help="at most N (matching) jobs"
)
@click.option("--fun", metavar="GLOB", help="only jobs of a function matching GLOB ('state.*')")
@click.option("--target", metavar="GLOB", help="only jobs whose target, as given, matches GLOB")
@click.option("--user", metavar="NAME", help="only jobs started by user NAME")
@click.option(
    "--test/--no-test",
    "test",
    default=None,
    help="only jobs run in test mode (test=true), or only the others",
)
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def list_jobs(
    ctx: click.Context,
    limit: int,
    fun: str | None,
    target: str | None,
    user: str | None,
    test: bool | None,
    out: str,
) -> None:
    """The most recent jobs, newest first; the filters apply on the master, so -n counts
    jobs that match. GLOBs are shell globs (*, ?, [abc], [!abc]), case-sensitive.

    \b
    Examples:
      saline jobs list --fun 'state.*' --test       dry runs of states
      saline jobs list --target 'be*' --user root -n 5

    A test-mode filter reads at most 100 x N (and 100,000) of the newest jobs matching the
    other filters: a dry run older than that is not listed.
    """
    filters = {"fun": fun, "target": target, "user": user, "test": test}
    with client(ctx) as master:
        asked = {k: v for k, v in filters.items() if v is not None}
        rows = master.request("jobs_list", limit=limit, **asked)["jobs"]
    if out != "human":
        click.echo(dump(rows, out))
        return
    click.echo(f"{'JID':22} {'STARTED':19} {'FUNCTION':20} {'TARGET':20} {'OK/RET/ALL':>11}  USER")
    for row in rows:
        started = datetime.fromtimestamp(row["created"]).strftime("%Y-%m-%d %H:%M:%S")
        counts = f"{row['succeeded']}/{row['returned']}/{row['minions']}"
        click.echo(
            f"{row['jid']:22} {started:19} {row['fun'][:20]:20} {row['target'][:20]:20} "
            f"{counts:>11}  {row['user']}"
        )


@jobs.command()
@click.argument("jid")
@click.option("--out", type=OUT_CHOICE, default="human")
@_STATE_OUTPUT
@colour_options
@click.pass_context
def show(ctx: click.Context, jid: str, out: str, state_output: str) -> None:
    """One job: what was asked, of whom, and every stored return, printed the way
    `saline run` / `saline state apply` printed them (--out json|yaml: the stored job)."""
    with client(ctx) as master:
        result = master.request("job_show", jid=jid)
    result.pop("type", None)
    if out != "human":
        click.echo(dump(result, out))
        return
    job, returns = result["job"], result["returns"]
    started = datetime.fromtimestamp(job["created"]).strftime("%Y-%m-%d %H:%M:%S")
    click.echo(
        f"jid {jid}: {call_text(job['fun'], job['args'], job['kwargs'])}\n"
        f"  on {job['target']!r} ({job['tgt_type']}), by {job['user']}, started {started}"
    )
    if job["missing"]:
        click.echo(f"not reached (offline): {', '.join(job['missing'])}", err=True)
    printer = printer_for(job["fun"], state_output)
    for minion_id, ret in sorted(returns.items()):
        click.echo(printer.line(Returned(minion_id, ret["return"], ret["success"])))
    running, queued = set(result.get("running", [])), set(result.get("queued", []))
    expected = [m for m in job["minions"] if m not in job["missing"]]
    silent = [m for m in expected if m not in returns]
    for minion_id in silent:
        if minion_id in running:
            click.echo(f"{minion_id}:\n    " + paint("RUNNING", "would change"))
        elif minion_id in queued:
            click.echo(f"{minion_id}:\n    " + paint("QUEUED: at its limit of jobs", "changed"))
        else:
            click.echo(f"{minion_id}:\n    " + paint("NO RETURN", "failed"))
    totals = printer.totals()
    if totals:
        click.echo(totals)
    parts = summary_counts(
        [
            (len(job["minions"]), "targeted"),
            (sum(1 for r in returns.values() if r["success"]), "succeeded"),
            (sum(1 for r in returns.values() if not r["success"]), "failed"),
            (len(silent), "running" if running or queued else "no return"),
            (len(job["missing"]), "not reached"),
        ]
    )
    click.echo(f"jid {jid}: {parts}", err=True)


@jobs.command()
@click.argument("jid")
@click.option("-t", "--timeout", type=float, default=3600.0, help="seconds to wait at most")
@click.option("--out", type=OUT_CHOICE, default="human")
@_STATE_OUTPUT
@colour_options
@click.pass_context
def wait(ctx: click.Context, jid: str, timeout: float, out: str, state_output: str) -> None:
    """Wait until every minion JID was sent to has returned; print like `saline run`.

    Exit codes as `saline run` (a minion that has not returned by --timeout counts as
    timed out; the job itself goes on until its own timeout on the minion).
    """
    from saline.cli.run import exit_code

    deadline = time.monotonic() + timeout
    while True:
        with client(ctx) as master:
            shown = master.request("job_show", jid=jid)
        job, returns = shown["job"], shown["returns"]
        expected = [m for m in job["minions"] if m not in job["missing"]]
        waiting = [m for m in expected if m not in returns]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    summary: dict[str, Any] = {
        "jid": jid,
        "minions": job["minions"],
        "failed": sorted(m for m, r in returns.items() if not r["success"]),
        "timed_out": waiting,
        "not_reached": job["missing"],
    }
    if out == "human":
        printer: ReturnPrinter = printer_for(job["fun"], state_output)
        for minion_id, ret in sorted(returns.items()):
            click.echo(printer.line(Returned(minion_id, ret["return"], ret["success"])))
        for minion_id in waiting:
            click.echo(f"{minion_id}:\n    " + paint(f"NOT RETURNED within {timeout:g}s", "failed"))
        totals = printer.totals()
        if totals:
            click.echo(totals)
    else:
        document = {"jid": jid, "returns": returns, "missing": job["missing"], "timed_out": waiting}
        click.echo(dump(document, out))
    ctx.exit(exit_code(summary))
