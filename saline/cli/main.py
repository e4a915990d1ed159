"""Entry point of ``saline``. Subcommands are imported only when invoked (fast start-up)."""

import importlib
import os
import sys
from typing import Any

import click

#: command name -> "module:attribute"; each module holds one command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "master": ("saline.cli.daemons:master", "run the master daemon in the foreground"),
    "minion": ("saline.cli.daemons:minion", "run a minion in the foreground"),
    "key": ("saline.cli.key:key", "manage minion keys (list, accept, reject, ...)"),
    "run": ("saline.cli.run:run", "run an execution function on targeted minions"),
    "call": ("saline.cli.call:call", "run a function or states on this node (--local: no master)"),
    "state": ("saline.cli.state:state", "apply or show declarative states"),
    "orchestrate": ("saline.cli.orchestrate:orchestrate", "run an orchestration runbook"),
    "reactor": ("saline.cli.reactor:reactor", "reactor rules, history, pause/resume, approve"),
    "jobs": ("saline.cli.jobs:jobs", "list and show stored jobs"),
    "events": ("saline.cli.events:events", "stream events from the master's bus"),
    "fire": ("saline.cli.fire:fire", "put an event on the master's bus"),
    "status": ("saline.cli.status:status", "minions online, keys, refusal counters"),
    "store": ("saline.cli.store:store", "migrate the master's store, or show its size"),
    "lab": ("saline.cli.lab:lab", "a local lab: a master and minions on loopback"),
    "completion": ("saline.cli.completion:completion", "print the bash or zsh completion script"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # help text without importing every command module
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="SALINE_CONFIG",
    metavar="FILE",
    help="config file (default: $SALINE_CONFIG, else /etc/saline/master.yaml or minion.yaml)",
)
@click.option(
    "-l",
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="override the config's log level",
)
@click.version_option(package_name="saline", message="saline %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """saline: states, ad-hoc commands and self-healing for a Chef Infra Server HA cluster."""
    ctx.obj = {"config_path": config_path, "log_level": log_level}


def main(argv: list[str] | None = None) -> Any:
    from saline.errors import SalineError

    if "_SALINE_COMPLETE" in os.environ:  # a shell asks: minion ids and functions complete too
        from saline.cli.completion import register

        register()
    try:
        return cli.main(args=argv, prog_name="saline", standalone_mode=True)
    except SalineError as e:  # errors meant for operators: one line, exit 1
        click.echo(f"saline: error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
