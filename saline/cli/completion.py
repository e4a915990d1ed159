"""``saline completion bash|zsh``: print the completion script for a shell.

The script is click's own (``_SALINE_COMPLETE=bash_source saline`` prints the same): the
shell calls ``saline`` back with the words typed so far, and click completes commands and
options. :func:`register` adds the values only the master knows, in :data:`COMPLETERS`:
minion ids (accepted keys, from the client API's ``status``) and function names (what the
minions listed in their hellos, from ``functions``). A master that is not running, refuses
the caller, or does not answer within :data:`MASTER_TIMEOUT` completes nothing: the shell
never waits long and never prints an error.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import click
from click.shell_completion import (
    BashComplete,
    CompletionItem,
    ShellComplete,
    ZshComplete,
    add_completion_class,
)

#: what the script sets when it calls ``saline`` back (click's ``_{PROG}_COMPLETE``)
COMPLETE_VAR = "_SALINE_COMPLETE"
PROG = "saline"
#: seconds one completion may wait for the master
MASTER_TIMEOUT = 1.0

#: a completer: (context of the command being typed, the word so far) -> candidate values
Completer = Callable[[click.Context, str], list[str]]


def _ask(ctx: click.Context, op: str) -> dict[str, Any] | None:
    """One request to the master named by the ``-c`` typed so far (or $SALINE_CONFIG);
    None when it cannot be asked or does not answer in time."""
    from saline.cli.common import client
    from saline.errors import SalineError

    root = ctx.find_root()
    # completion parses the command line without running the group's callback, which is
    # what fills ctx.obj: give ``client`` the -c that was typed
    root.ensure_object(dict)["config_path"] = root.params.get("config_path")
    try:
        with client(ctx, timeout=MASTER_TIMEOUT) as master:
            reply: dict[str, Any] = master.request(op)
            return reply
    except (SalineError, OSError):
        return None


def _key_ids(*states: str) -> Completer:
    def complete(ctx: click.Context, incomplete: str) -> list[str]:
        reply = _ask(ctx, "status") or {}
        keys = reply.get("keys") or {}
        ids = {i for state in states for i in keys.get(state) or [] if isinstance(i, str)}
        return sorted(i for i in ids if i.startswith(incomplete))

    return complete


def function_names(ctx: click.Context, incomplete: str) -> list[str]:
    """The functions the online minions listed (``test.ping``, ``cmd.run`` ...)."""
    reply = _ask(ctx, "functions") or {}
    names = reply.get("functions") or []
    return [n for n in names if isinstance(n, str) and n.startswith(incomplete)]


accepted_ids = _key_ids("accepted")

#: (command path below ``saline``, parameter name) -> what completes that parameter's value;
#: tests check that every entry names a parameter of the command tree
COMPLETERS: dict[tuple[str, str], Completer] = {
    ("run", "target"): accepted_ids,
    ("run", "function"): function_names,
    ("call", "function"): function_names,
    ("state apply", "target"): accepted_ids,
    ("state show", "target"): accepted_ids,
    ("key accept", "minion_id"): _key_ids("pending", "rejected"),
    ("key reject", "minion_id"): _key_ids("pending", "accepted"),
    ("key delete", "minion_id"): _key_ids("accepted", "pending", "rejected"),
    ("key finger", "minion_id"): _key_ids("accepted", "pending", "rejected"),
}


class _FromMaster(ShellComplete):
    """click's completion, with :data:`COMPLETERS` for the parameters listed there."""

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
        # the two helpers click's own get_completions uses: which command is being typed,
        # and which of its parameters (or subcommands) the incomplete word belongs to
        from click.shell_completion import _resolve_context, _resolve_incomplete

        ctx = _resolve_context(self.cli, self.ctx_args, self.prog_name, args)
        target, incomplete = _resolve_incomplete(ctx, args, incomplete)
        if isinstance(target, click.Parameter) and target.name is not None:
            path = ctx.command_path.partition(" ")[2]
            completer = COMPLETERS.get((path, target.name))
            if completer is not None:
                return [CompletionItem(value) for value in completer(ctx, incomplete)]
        return target.shell_complete(ctx, incomplete)


class SalineBash(_FromMaster, BashComplete):
    name: ClassVar[str] = "bash"


class SalineZsh(_FromMaster, ZshComplete):
    name: ClassVar[str] = "zsh"


#: the shells ``saline completion`` knows
SHELLS: dict[str, type[ShellComplete]] = {"bash": SalineBash, "zsh": SalineZsh}


def register() -> None:
    """Make the completion calls of the scripts use :data:`COMPLETERS` (``saline`` calls it
    when the shell asks, before click answers)."""
    for name, cls in SHELLS.items():
        add_completion_class(cls, name)


@click.command()
@click.argument("shell", type=click.Choice(sorted(SHELLS)))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash or zsh): commands, options, minion ids
    and function names complete on TAB.

    \b
    bash: saline completion bash > /etc/bash_completion.d/saline
          (or: eval "$(saline completion bash)" in ~/.bashrc)
    zsh:  saline completion zsh > "${fpath[1]}/_saline"
          (or: eval "$(saline completion zsh)" in ~/.zshrc, after compinit)
    """
    script = SHELLS[shell](ctx.find_root().command, {}, PROG, COMPLETE_VAR).source()
    click.echo(script, nl=False)
