"""``saline jobs list | show JID | wait JID``: the master's job store."""

import time
from datetime import datetime
from typing import Any

import click

from saline.cli.common import OUT_CHOICE, client, dump


@click.group()
def jobs() -> None:
    """Stored jobs and their returns."""


@jobs.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20)
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def list_jobs(ctx: click.Context, limit: int, out: str) -> None:
    """The most recent jobs, newest first."""
    with client(ctx) as master:
        rows = master.request("jobs_list", limit=limit)["jobs"]
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
@click.option("--out", type=OUT_CHOICE, default="yaml")
@click.pass_context
def show(ctx: click.Context, jid: str, out: str) -> None:
    """One job: what was asked, of whom, and every stored return."""
    with client(ctx) as master:
        result = master.request("job_show", jid=jid)
    result.pop("type", None)
    click.echo(dump(result, "yaml" if out == "human" else out))


@jobs.command()
@click.argument("jid")
@click.option("-t", "--timeout", type=float, default=3600.0, help="seconds to wait at most")
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def wait(ctx: click.Context, jid: str, timeout: float, out: str) -> None:
    """Wait until every minion JID was sent to has returned; print like `saline run`.

    Exit codes as `saline run` (a minion that has not returned by --timeout counts as
    timed out; the job itself goes on until its own timeout on the minion).
    """
    from saline.cli.run import _human_return, exit_code

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
        for minion_id, ret in sorted(returns.items()):
            click.echo(_human_return(minion_id, ret["return"], ret["success"]))
        for minion_id in waiting:
            click.echo(f"{minion_id}:\n    NOT RETURNED within {timeout:g}s")
    else:
        document = {"jid": jid, "returns": returns, "missing": job["missing"], "timed_out": waiting}
        click.echo(dump(document, out))
    ctx.exit(exit_code(summary))
