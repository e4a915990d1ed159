"""``saline orchestrate RUNBOOK [--test] [--var K=V ...]``: ordered steps across targets."""

from typing import Any

import click

from saline.cli.common import OUT_CHOICE, client, dump
from saline.cli.run import parse_value


@click.command()
@click.argument("runbook")
@click.option("--test", is_flag=True, help="run no commands; states in test mode")
@click.option("--var", "variables", multiple=True, help="KEY=VALUE overriding a runbook var")
@click.option("-t", "--timeout", type=float, default=3600.0, help="seconds to wait for the end")
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def orchestrate(
    ctx: click.Context,
    runbook: str,
    test: bool,
    variables: tuple[str, ...],
    timeout: float,
    out: str,
) -> None:
    """Run RUNBOOK (a name in the master's runbook_roots, like chef_ha/add_frontend).

    Exit 0 when every step succeeded, 1 otherwise.
    """
    parsed = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--var")
        parsed[key] = parse_value(value)
    with client(ctx, timeout=timeout) as master:
        result = master.request("orchestrate", runbook=runbook, vars=parsed, test=test)
    result.pop("type", None)
    if out != "human":
        click.echo(dump(result, out))
    else:
        mark = {True: "ok", False: "FAILED", None: "would change"}
        for step in result["steps"]:
            batches = " | ".join(",".join(b) for b in step["batches"])
            click.echo(
                f"{mark.get(step['result'], step['result']):>12}  {step['name']}: "
                f"{step['comment']}" + (f"  [{batches}]" if batches else "")
            )
            for minion, states in _changed_states(step, test):
                click.echo(f"{'':>14}{minion}: {states}")
        for name in result.get("not_started", []):
            click.echo(f"{'not started':>12}  {name}")
        state = "succeeded" if result["success"] else f"FAILED (stopped at {result['stopped_at']})"
        click.echo(f"runbook {result['name']}{' (test)' if test else ''}: {state}", err=True)
    ctx.exit(0 if result["success"] else 1)


def _changed_states(step: dict[str, Any], test: bool) -> list[tuple[str, str]]:
    """For a state step, per minion: the states it changed (or would change)."""
    found: list[tuple[str, str]] = []
    for minion, ret in sorted(step.get("returns", {}).items()):
        if not isinstance(ret, list):
            continue
        changed = [
            f"{c.get('state')} {c.get('name')}"
            for c in ret
            if isinstance(c, dict) and (c.get("changes") or c.get("result") is None)
        ]
        if changed:
            verb = "would change" if test else "changed"
            found.append((minion, f"{verb} {len(changed)}: " + ", ".join(changed)))
    return found
