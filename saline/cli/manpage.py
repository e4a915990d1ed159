"""``python -m saline.cli.manpage [-o FILE]``: the saline(1) man page, made from the click
command tree, so it documents every command and option in the words of its ``--help``.

Output is roff with the man(7) macros (``man -l FILE`` shows it); ``make man`` writes
``build/man/saline.1``. The date is ``$SOURCE_DATE_EPOCH``'s when set (reproducible builds),
else today's.
"""

import argparse
import inspect
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

SUMMARY = "states, ad-hoc commands and self-healing for a Chef Infra Server HA cluster"

#: sections after the commands: (title, paragraphs of (tag, text))
_ENVIRONMENT = [
    ("SALINE_CONFIG", "the config file when no -c is given"),
    ("NO_COLOR", "when set, human output has no colours"),
    ("_SALINE_COMPLETE", "set by the completion scripts of saline completion; not for people"),
]
_FILES = [
    ("/etc/saline/master.yaml", "the master's config, read by saline master and the CLI"),
    ("/etc/saline/minion.yaml", "a minion's config, read by saline minion and saline-minion"),
    ("/run/saline/master/client.sock", "the master's client API (root only)"),
]


def escape(text: str) -> str:
    r"""Text as roff prints it: backslashes kept (``\e``), ASCII hyphens (``\-``, so options
    copy and paste), and no line taken for a request (a leading ``.`` or ``'``)."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line.startswith((".", "'")) else line for line in out.split("\n")]
    return "\n".join(lines)


def _styled(record: str) -> str:
    """``-c, --config FILE`` with the flags in bold and the value names in italics."""
    words = []
    for word in record.split(" "):
        comma = "," if word.endswith(",") else ""
        bare = word.removesuffix(",")
        font = "B" if bare.startswith("-") or bare == "/" else "I"
        words.append(f"\\f{font}{escape(bare)}\\fR{comma}" if bare else "")
    return " ".join(words)


def _help_text(command: click.Command) -> list[str]:
    """The command's help as roff paragraphs: ``\\b`` blocks kept as they are written."""
    text = inspect.cleandoc(command.help or command.short_help or "").split("\f")[0]
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if not paragraph.strip():
            continue
        lines = paragraph.split("\n")
        if lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + escape("\n".join(lines[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + escape(" ".join(line.strip() for line in lines)))
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or not isinstance(param, click.Option):
            continue  # hidden, or an argument (named in the synopsis)
        flags, help_text = record
        out.append(f".TP\n{_styled(flags)}\n{escape(help_text or '')}")
    return out


def walk(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """``command`` and every visible command below it, depth first, in name order."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                # as the command line builds it (context settings: -h as well as --help)
                yield from walk(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True))


def _section(command: click.Command, ctx: click.Context) -> str:
    usage = " ".join(command.collect_usage_pieces(ctx))
    parts = [
        f".SS {escape(ctx.command_path)}",
        f".B {escape(ctx.command_path)}\n{escape(usage)}",
        *_help_text(command),
        *_options(command, ctx),
    ]
    return "\n".join(parts)


def _tagged(title: str, entries: list[tuple[str, str]]) -> str:
    body = "\n".join(f".TP\n.B {escape(tag)}\n{escape(text)}" for tag, text in entries)
    return f".SH {title}\n{body}"


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else time.time()
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def render(cli: click.Command, prog: str = "saline") -> str:
    """The whole page for the tree under ``cli``."""
    from saline import __version__

    root = cli.make_context(prog, [], resilient_parsing=True)
    commands = list(walk(cli, root))[1:]
    parts = [
        f'.TH {prog.upper()} 1 "{_date()}" "{prog} {__version__}" "saline manual"',
        f".SH NAME\n{escape(prog)} \\- {escape(SUMMARY)}",
        f".SH SYNOPSIS\n.B {escape(prog)}\n{escape(' '.join(cli.collect_usage_pieces(root)))}",
        ".SH DESCRIPTION",
        *_help_text(cli),
        ".PP\nEvery command answers \\fB\\-h\\fR and \\fB\\-\\-help\\fR.",
        ".SH OPTIONS",
        *_options(cli, root),
        ".SH COMMANDS",
        *(_section(command, ctx) for command, ctx in commands),
        _tagged("ENVIRONMENT", _ENVIRONMENT),
        _tagged("FILES", _FILES),
        ".SH SEE ALSO\n\\fBsaline\\-minion \\-\\-help\\fR, the minion's own entry point.",
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saline.cli.manpage", description=__doc__)
    parser.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    args = parser.parse_args(argv)
    from saline.cli.main import cli

    page = render(cli)
    if args.output is None:
        sys.stdout.write(page)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
