"""``saline state apply | show``: declarative states on the targeted minions."""

from typing import Any

import click

from saline.cli.common import BATCH, OUT_CHOICE, dump, resolve_target, target_shortcuts
from saline.cli.run import execute
from saline.targeting import TargetType

_TARGETING = [
    click.option(
        "-T",
        "--tgt-type",
        type=click.Choice([t.value for t in TargetType]),
        default=TargetType.GLOB.value,
        help="how TARGET is read (default glob on the minion id)",
    ),
    click.option("-t", "--timeout", type=float, default=60.0, help="seconds to wait per minion"),
    click.option("--out", type=OUT_CHOICE, default="human", help="output format"),
]


def _targeting(fn: Any) -> Any:
    for option in reversed(_TARGETING):
        fn = option(fn)
    return target_shortcuts(fn)


#: each state is counted once, in one of these (in this order in the summary)
_KINDS = ("ok", "changed", "would change", "failed", "skipped")


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


def render_states(minion_id: str, value: Any, success: bool) -> str:
    """One minion's state run, one line per state plus its changes, and the counts."""
    if not isinstance(value, list):
        return f"{minion_id}:  [FAILED]\n    " + dump(value, "yaml").replace("\n", "\n    ")
    lines = [f"{minion_id}:"]
    counts = dict.fromkeys(_KINDS, 0)
    for chunk in value:
        kind = state_kind(chunk)
        counts[kind] += 1
        mark = {"failed": "FAILED", "skipped": "SKIPPED"}.get(kind, kind)
        lines.append(
            f"  {mark:>12}  {chunk.get('state')} {chunk.get('name')}: {chunk.get('comment', '')}"
            f"  ({chunk.get('duration_ms', 0):.0f} ms)"
        )
        if chunk.get("changes"):
            body = dump(chunk["changes"], "yaml")
            lines.extend("                " + line for line in body.splitlines())
    shown = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n or kind in ("ok", "failed"))
    lines.append(f"  {len(value)} states: {shown}")
    return "\n".join(lines)


@click.group()
def state() -> None:
    """Apply or show declarative states (state files from the master's file_roots)."""


@state.command(context_settings={"ignore_unknown_options": False})
@click.argument("target")
@click.argument("states", nargs=-1)
@click.option("--test", is_flag=True, help="change nothing; report what would change")
@click.option("--failhard", is_flag=True, help="stop at the first failed state")
@click.option("-b", "--batch", type=BATCH, default=None, help="at most N (or N%) at a time")
@_targeting
@click.pass_context
def apply(
    ctx: click.Context,
    target: str,
    states: tuple[str, ...],
    test: bool,
    failhard: bool,
    batch: int | str | None,
    tgt_type: str,
    timeout: float,
    out: str,
    shortcut: str | None,
) -> None:
    """Apply STATE ... (no STATE: the highstate from top.yaml) on the minions TARGET matches."""
    target, tgt_type = resolve_target(target, tgt_type, shortcut)
    code = execute(
        ctx,
        target,
        tgt_type,
        "state.apply",
        list(states),
        {"test": test, "failhard": failhard},
        timeout,
        batch,
        out,
        render_states,
    )
    ctx.exit(code)


@state.command()
@click.argument("target")
@click.argument("states", nargs=-1, required=True)
@_targeting
@click.pass_context
def show(
    ctx: click.Context,
    target: str,
    states: tuple[str, ...],
    tgt_type: str,
    timeout: float,
    out: str,
    shortcut: str | None,
) -> None:
    """Print STATE ... rendered and validated for each minion, without applying anything."""
    target, tgt_type = resolve_target(target, tgt_type, shortcut)
    code = execute(
        ctx,
        target,
        tgt_type,
        "state.show",
        list(states),
        {},
        timeout,
        None,
        "yaml" if out == "human" else out,
    )
    ctx.exit(code)
