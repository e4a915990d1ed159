"""``saline reactor``: rules, their decisions (the audit trail), and the operator's switches."""

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from saline.cli.common import OUT_CHOICE, client, dump, master_config


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


@reactor.command()
@click.option("--out", type=click.Choice(["json", "yaml"]), default="json")
@click.pass_context
def view(ctx: click.Context, out: str) -> None:
    """What the reactor sees now: minions and grains, who is online, the latest beacon
    observations and the reactor's memory; the snapshot `simulate --view` starts from.

    Record an incident from here with `saline events --since SEQ --out json` (SEQ is the
    snapshot's `seq`)."""
    with client(ctx) as master:
        result = master.request("reactor_view")
    result.pop("type", None)
    click.echo(dump(result, out))


@reactor.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rules",
    "rule_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="rule directory to rehearse (repeatable; default: the master's reactor_dirs); "
    "saline's shipped rules are always loaded first, as the master does",
)
@click.option(
    "--view",
    "view_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the cluster view to start from (`saline reactor view` output)",
)
@click.option(
    "--reaction-time",
    default="30s",
    show_default=True,
    help="how long a fired reaction the recording has no end for is assumed to run",
)
@click.option("--all", "show_all", is_flag=True, help="also list skips on a false condition")
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def simulate(
    ctx: click.Context,
    events: Path,
    rule_dirs: tuple[Path, ...],
    view_path: Path | None,
    reaction_time: str,
    show_all: bool,
    out: str,
) -> None:
    """Replay recorded EVENTS (`saline events --out json` lines) against the rules on a
    simulated clock and print every decision with its reason and the jobs it would have
    sent, beside what the real reactor decided when the recording holds it. Acts on
    nothing: no job, no event, nothing stored."""
    from master.simulate import Simulation, load_events, load_snapshot
    from reactors.policy import load_policy
    from reactors.shipped import SHIPPED_RULES, SHIPPED_RUNBOOKS
    from saline.durations import parse_duration
    from saline.errors import SalineError

    try:
        seconds = parse_duration(reaction_time)
        config = master_config(ctx)
        dirs = list(rule_dirs) or [d for d in config.reactor_dirs if d.is_dir()]
        runbooks = [*config.runbook_roots, SHIPPED_RUNBOOKS]
        policy = load_policy([SHIPPED_RULES, *dirs], runbooks)
        snapshot = load_snapshot(view_path) if view_path is not None else None
        recorded = load_events(events)
        simulation = Simulation(
            policy, snapshot, max_depth=config.reactor_max_depth, reaction_seconds=seconds
        )
        results = simulation.run(recorded)
    except (SalineError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    start = recorded[0].ts if recorded else 0.0
    if out != "human":
        click.echo(dump({"decisions": [r.as_dict(start) for r in results]}, out))
        return
    counts: dict[str, int] = {}
    for r in results:
        counts[r.decision.verdict.value] = counts.get(r.decision.verdict.value, 0) + 1
    compared = [r for r in results if r.real is not None]
    differing = [r for r in compared if r.differs]
    click.echo(
        f"replayed {len(recorded)} events against {len(policy.rules)} rules: "
        + (", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no decisions")
        + f"; {len(compared)} compared with the recording, {len(differing)} differ"
    )
    for r in results:
        if not show_all and r.decision.reason == "condition false" and not r.differs:
            continue
        click.echo(_simulated_line(r.as_dict(start)))


def _simulated_line(d: dict[str, Any]) -> str:
    """``+12.3s #1234 TAG  RULE  fire (key be2): reason`` and the actions and real verdict."""
    seq = f"#{d['seq']}" if d["seq"] is not None else "(timer)"
    key = f" (key {d['key']})" if d["key"] else ""
    lines = [
        f"+{d['offset']:.1f}s {seq} {d['event']}  {d['rule']}  {d['verdict']}{key}: {d['reason']}"
    ]
    lines += [f"      would {action}" for action in d["actions"] if d["verdict"] == "fire"]
    if d["ended"]:
        lines.append(f"      ended: {d['ended']}")
    real = d["real"]
    if real is not None and d["differs"]:
        lines.append(f"      DIFFERS: the reactor decided {real['verdict']}: {real['reason']}")
    return "\n".join(lines)
