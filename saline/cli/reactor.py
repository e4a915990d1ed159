"""``saline reactor``: rules, their decisions (the audit trail), and the operator's switches."""

from datetime import datetime

import click

from saline.cli.common import OUT_CHOICE, client, dump


@click.group()
def reactor() -> None:
    """The reactor: rules, history, pause/resume, approvals, forget, reload."""


@reactor.command("list")
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def list_rules(ctx: click.Context, out: str) -> None:
    """Loaded rules, whether the reactor is paused, reactions in flight and awaiting approval."""
    with client(ctx) as master:
        result = master.request("reactor_list")
    result.pop("type", None)
    if out != "human":
        click.echo(dump(result, out))
        return
    click.echo(
        f"reactor {'PAUSED' if result['paused'] else 'active'}; "
        f"{len(result['in_flight'])} in flight; awaiting approval: "
        f"{', '.join(result['awaiting']) or '-'}"
    )
    for rule in result["rules"]:
        click.echo(f"  {rule['name']:32} on {rule['on']}  mode={rule['mode']}")


@reactor.command()
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=30)
@click.option("--rule", default=None, help="only this rule's decisions")
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def history(ctx: click.Context, limit: int, rule: str | None, out: str) -> None:
    """Decisions, newest first: event -> rule -> verdict (and why) -> jobs -> outcome."""
    with client(ctx) as master:
        rows = master.request("reactor_history", limit=limit, rule=rule)["history"]
    if out != "human":
        click.echo(dump(rows, out))
        return
    for row in rows:
        when = datetime.fromtimestamp(row["created"]).strftime("%H:%M:%S")
        jobs = [p.get("jid") for p in row["progress"].values() if p.get("jid")]
        click.echo(
            f"{when} {row['id'][:12]} event #{row['event_seq']} {row['event_tag']} -> "
            f"{row['rule']}: {row['verdict']} ({row['reason']})"
            + (f" -> jobs {', '.join(jobs)}" if jobs else "")
            + f" -> {row['outcome'] or 'running'}"
        )


@reactor.command()
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Stop acting: every matching event is decided and recorded as skipped (paused)."""
    with client(ctx) as master:
        master.request("reactor_pause")
    click.echo("reactor paused")


@reactor.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Act again."""
    with client(ctx) as master:
        master.request("reactor_resume")
    click.echo("reactor resumed")


@reactor.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Load the rule files again without a restart; a bad file keeps the old rules."""
    with client(ctx) as master:
        click.echo(master.request("reactor_reload")["message"])


@reactor.command()
@click.argument("reaction_id")
@click.pass_context
def approve(ctx: click.Context, reaction_id: str) -> None:
    """Approve a reaction held by a rule in approve mode (guards are checked again)."""
    with client(ctx) as master:
        result = master.request("reactor_approve", id=reaction_id)
    click.echo(f"{result['verdict']}: {result['reason']}")


@reactor.command()
@click.argument("reaction_id")
@click.pass_context
def reject(ctx: click.Context, reaction_id: str) -> None:
    """Drop a reaction held for approval."""
    with client(ctx) as master:
        click.echo(master.request("reactor_reject", id=reaction_id)["message"])


@reactor.command()
@click.option("--rule", default=None, help="only this rule (default: every rule)")
@click.option("--key", default=None, help="only this key, e.g. a minion id (default: every key)")
@click.pass_context
def forget(ctx: click.Context, rule: str | None, key: str | None) -> None:
    """Forget throttles, cooldowns and flap history, e.g. after fixing a node by hand.

    Reactions in flight or awaiting approval are kept.
    """
    with client(ctx) as master:
        click.echo(master.request("reactor_forget", rule=rule, key=key)["message"])
