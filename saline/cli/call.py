"""``saline call``: run an execution function (or states) on this node, as a job would.

SaltStack's ``salt-call``. The function runs in a forked child under the minion's own
executor and modules, with the minion's config (``-c``, ``$SALINE_CONFIG``, else
``/etc/saline/minion.yaml``), its id and grains, under the same time limits as a job
(``timeout=``, the function's declared default, ``max_function_timeout``).

* ``--local``: no master. Files (``saline://``) come from the config's ``file_roots`` and
  the pillar is compiled from its ``pillar_roots`` for this node's id and grains: the tool
  for when the master is what broke.
* without it: files and pillar are asked of the master with this node's own key, like a
  job's (``minion.masterlink``: no hello, so a running minion daemon is undisturbed). The
  return is printed here, not sent to the master.

Output and exit codes are those of ``saline run`` for one minion: 0 success, 11 the
function failed, 12 it was killed at its time limit, 1 a saline error, 2 a usage error.
"""

import asyncio
import difflib
import time
from typing import Any

import click

from saline.cli.common import OUT_CHOICE, dump, obj
from saline.cli.render import STATE_OUTPUTS, Returned, colour_options, printer_for
from saline.cli.run import exit_code, print_summary, split_arguments
from saline.errors import SalineError


@click.command()
@click.argument("function")
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--local",
    is_flag=True,
    help="no master: files from file_roots, pillar from pillar_roots of the minion config",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help="the minion config (default: saline -c, $SALINE_CONFIG, else /etc/saline/minion.yaml)",
)
@click.option("--out", type=OUT_CHOICE, default="human", help="output format")
@click.option(
    "--state-output",
    type=click.Choice(STATE_OUTPUTS),
    default="full",
    help="state.apply in human output: every state (full), one line each (terse),"
    " or full only for those that changed or failed (changes)",
)
@colour_options
@click.pass_context
def call(
    ctx: click.Context,
    function: str,
    arguments: tuple[str, ...],
    local: bool,
    config_path: str | None,
    out: str,
    state_output: str,
) -> None:
    """Run FUNCTION with ARG ... KEY=VALUE ... on this node (timeout=S: its time limit).

    \b
    Examples:
      saline call --local test.ping
      saline call --local state.apply test=true      (the highstate, changing nothing)
      saline call --local state.apply chef.backend
      saline call --local pillar.items
      saline call -c /etc/saline/minion.yaml state.apply chef.frontend
      saline call --local chef_server.reconfigure timeout=2400
    """
    from saline.protocol import killed_at_time_limit, timeout_keyword

    args, kwargs = split_arguments(arguments)
    try:
        timeout_keyword(kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    started = time.monotonic()
    minion_id, ret = run_here(
        config_path or obj(ctx).get("config_path"), function, args, kwargs, local
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    timed_out = killed_at_time_limit(ret.retcode, ret.ret)
    returns = {minion_id: {"success": ret.success, "retcode": ret.retcode, "return": ret.ret}}
    summary: dict[str, Any] = {
        "jid": ret.jid,
        "minions": [minion_id],
        "succeeded": [minion_id] if ret.success else [],
        "failed": [] if ret.success or timed_out else [minion_id],
        "timed_out": [minion_id] if timed_out else [],
        "running": [],
        "not_reached": [],
    }
    if out == "human":
        printer = printer_for(function, state_output)
        click.echo(printer.line(Returned(minion_id, ret.ret, ret.success, ret.duration_ms)))
        totals = printer.totals()
        if totals:
            click.echo(totals)
        print_summary(summary, elapsed_ms)
    else:
        document = {
            "jid": ret.jid,
            "returns": returns,
            "missing": [],
            "timed_out": summary["timed_out"],
            "running": [],
        }
        click.echo(dump(document, out))
    ctx.exit(exit_code(summary))


def run_here(
    config_path: str | None,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
    local: bool,
) -> tuple[str, Any]:
    """Run ``function`` on this node: (minion id, its ``Return``).

    :raises SalineError: a bad config, an unknown function, no master key (without local).
    """
    from minion.config import apply_env, load_minion_config
    from minion.executor import execute
    from minion.grains import collect_grains, minion_id
    from minion.modules import registry
    from minion.modules.base import Context
    from minion.plugins import load_modules
    from minion.services.select import select_provider
    from saline.jid import new_jid
    from saline.protocol import MAX_FUNCTION_TIMEOUT, Job, timeout_keyword
    from saline.shellwords import refusal

    config, _ = load_minion_config(config_path)
    apply_env(config)  # as the minion daemon does first: jobs and their commands read it
    functions = registry(load_modules())  # plugins too; a broken one is an error
    if function not in functions:
        close = difflib.get_close_matches(function, list(functions), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SalineError(f"no function {function!r} on this node{hint}: see sys.list_functions")
    if function == "cmd.run" and args and isinstance(args[0], str) and not _shell(kwargs):
        problem = refusal(args[0], "cmd.run")
        if problem is not None:
            raise SalineError(problem)
    node = minion_id(config)
    grains = collect_grains(config, node)
    ctx = Context(node, config, grains, select_provider(config), functions)
    asked = timeout_keyword(kwargs)
    job = Job(
        jid=new_jid(),
        fun=function,
        args=args,
        kwargs=kwargs,
        timeout=asked or MAX_FUNCTION_TIMEOUT,
        default_timeout=asked is None,
    )
    if local:
        from minion.local import LocalRelay

        relay: Any = LocalRelay(config.file_roots, config.pillar_roots, node, grains)
    else:
        from minion.masterlink import MasterRelay

        relay = MasterRelay(config, node)

    async def run() -> Any:
        try:
            return await execute(ctx, job, node, relay=relay)
        finally:
            if not local:
                await relay.close()

    return node, asyncio.run(run())


def _shell(kwargs: dict[str, Any]) -> bool:
    return any(
        str(kwargs.get(key, "")).strip().lower() in ("true", "yes", "on", "1")
        for key in ("shell", "python_shell")
    )
