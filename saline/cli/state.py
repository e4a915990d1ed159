"""``saline state apply | show``: declarative states on the targeted minions."""

from typing import Any

import click

from saline.cli.common import BATCH, OUT_CHOICE, resolve_target, target_shortcuts
from saline.cli.render import STATE_OUTPUTS, ReturnPrinter, StatePrinter, colour_options
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
    return colour_options(target_shortcuts(fn))


@click.group()
def state() -> None:
    """Apply or show declarative states (state files from the master's file_roots)."""


@state.command(context_settings={"ignore_unknown_options": False})
@click.argument("target")
@click.argument("states", nargs=-1)
@click.option("--test", is_flag=True, help="change nothing; report what would change")
@click.option("--failhard", is_flag=True, help="stop at the first failed state")
@click.option("-b", "--batch", type=BATCH, default=None, help="at most N (or N%) at a time")
@click.option(
    "--state-output",
    type=click.Choice(STATE_OUTPUTS),
    default="full",
    help="human output: every state with its comment and changes (full), one line per"
    " state (terse), or full only for states that changed or failed (changes)",
)
@_targeting
@click.pass_context
def apply(
    ctx: click.Context,
    target: str,
    states: tuple[str, ...],
    test: bool,
    failhard: bool,
    batch: int | str | None,
    state_output: str,
    tgt_type: str,
    timeout: float,
    out: str,
    shortcut: str | None,
) -> None:
    """Apply STATE ... (no STATE: the highstate from top.yaml) on the minions TARGET matches.

    \b
    Examples:
      saline state apply '*'                            the highstate
      saline state apply -G role:backend chef.backend --test
      saline state apply be1 --state-output changes     one line for states left as they were
    """
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
        StatePrinter(state_output),
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
        out,
        ReturnPrinter(),
    )
    ctx.exit(code)
