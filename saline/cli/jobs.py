"""``saline jobs list | show JID``: the master's job store."""

from datetime import datetime

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
