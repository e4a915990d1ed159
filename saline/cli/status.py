"""``saline status``: minions online and offline, keys waiting, what was refused."""

from datetime import datetime
from typing import Any

import click

from saline.cli.common import OUT_CHOICE, client, dump


@click.command()
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def status(ctx: click.Context, out: str) -> None:
    """Which accepted minions are online, which keys wait, refusal counters, and the
    master's internal tasks that failed and were restarted."""
    with client(ctx) as master:
        result = master.request("status")
    result.pop("type", None)
    accepted = result["keys"]["accepted"]
    online = set(result["online"])
    result["offline"] = [m for m in accepted if m not in online]
    if out != "human":
        click.echo(dump(result, out))
        return
    click.echo(f"online  ({len(online)}): {', '.join(sorted(online)) or '-'}")
    click.echo(f"offline ({len(result['offline'])}): {', '.join(result['offline']) or '-'}")
    pending = result["keys"]["pending"]
    click.echo(f"pending keys ({len(pending)}): {', '.join(pending) or '-'}")
    click.echo(f"active jobs: {result['active_jobs']}")
    click.echo(_leadership(result["leadership"]))
    reactor = result["reactor"]
    click.echo(
        f"reactor: {'PAUSED' if reactor['paused'] else 'active'}, "
        f"{len(reactor['in_flight'])} remediation(s) in flight, "
        f"awaiting approval: {', '.join(reactor['awaiting_approval']) or '-'}"
    )
    for minion, beacons in sorted(result["observations"].items()):
        states = ", ".join(f"{b}={s}" for b, s in sorted(beacons.items()))
        click.echo(f"  {minion}: {states}")
    for name, ret in sorted(result.get("returners", {}).items()):
        trouble = f", failing: {ret['last_error']}" if ret.get("last_error") else ""
        click.echo(
            f"returner {name}: {ret['queued']} queued, {ret['shipped']} shipped, "
            f"{ret['dropped']} dropped{trouble}"
        )
    for name, told in sorted(result.get("notify", {}).items()):
        trouble = ", ".join(f"{told[k]} {k}" for k in ("retried", "failed", "dropped") if told[k])
        click.echo(
            f"notify {name}: {told['sent']} sent, {told['queued']} queued"
            + (f", {trouble}" if trouble else "")
        )
    if result.get("retention"):
        click.echo(_retention(result["retention"]))
    refusals = result["refusals"]
    if refusals:
        click.echo("refused: " + ", ".join(f"{k}={v}" for k, v in sorted(refusals.items())))
    failing = {name: t for name, t in result.get("tasks", {}).items() if t["restarts"]}
    for name, task in sorted(failing.items()):
        click.echo(f"task {name}: restarted {task['restarts']}x, last error: {task['last_error']}")


def _leadership(lead: dict[str, Any]) -> str:
    """``leader: m1 (epoch 7, since 22:58:01); masters: m1, m2, m3; this master: m2``."""
    since = datetime.fromtimestamp(lead["since"]).strftime("%H:%M:%S")
    who = lead["leader"] or "NOBODY"
    line = f"leader: {who} (epoch {lead['epoch']}, since {since}: {lead['reason']})"
    masters = sorted(lead.get("masters") or {})
    if len(masters) > 1 or lead["leader"] != lead["name"]:
        role = "leads" if lead["leading"] else "standby"
        line += f"; masters: {', '.join(masters) or '-'}; this master: {lead['name']} ({role})"
    if lead.get("error"):
        line += f"; etcd: {lead['error']}"
    return line


def _retention(retention: dict[str, Any]) -> str:
    """``retention: last pass 12:00:01 (0.004s), deleted since start: 120 events, 3 jobs``."""
    if not any(retention["keep"].values()):
        return "retention: off (keep_jobs, keep_events and keep_reactions are 0)"
    if retention["last_pass"] is None:
        return "retention: no pass yet"
    when = datetime.fromtimestamp(retention["last_pass"]).strftime("%H:%M:%S")
    deleted = [f"{n} {kind}" for kind, n in retention["deleted"].items() if n]
    return (
        f"retention: last pass {when} ({retention['last_seconds']:g}s), "
        f"deleted since start: {', '.join(deleted) or 'nothing'}"
    )
