"""saline(1): made from the click tree, it names every command and option, and ``man``
renders it without a warning."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from saline.cli.main import cli
from saline.cli.manpage import escape, main, render


def _tree() -> list[tuple[str, click.Command, click.Context]]:
    """Every visible command below ``saline``, walked here on its own (not by the
    generator), with the context the command line would give it."""
    found: list[tuple[str, click.Command, click.Context]] = []

    def visit(command: click.Command, ctx: click.Context) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                if sub.hidden:
                    continue
                sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
                found.append((sub_ctx.command_path, sub, sub_ctx))
                visit(sub, sub_ctx)

    visit(cli, cli.make_context("saline", [], resilient_parsing=True))
    return found


def _plain(roff: str) -> str:
    """roff text as read: font changes dropped, escaped hyphens and backslashes plain."""
    return re.sub(r"\\f[BIR]", "", roff).replace("\\-", "-").replace("\\e", "\\")


def _sections(page: str) -> dict[str, str]:
    """Command path -> its section (from its .SS line to the next .SS or .SH)."""
    chunks = re.split(r"^(?=\.S[SH] )", page, flags=re.MULTILINE)
    return {
        _plain(chunk.split("\n", 1)[0][4:]): _plain(chunk)
        for chunk in chunks
        if chunk.startswith(".SS ")
    }


def test_every_command_and_option_is_on_the_page() -> None:
    sections = _sections(render(cli))
    tree = _tree()
    assert len(tree) > 30  # the walk found the subcommands too
    assert sorted(sections) == sorted(path for path, _, _ in tree)
    for path, command, ctx in tree:
        section = sections[path]
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden:
                for flag in param.opts + param.secondary_opts:
                    assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", section), (path, flag)
                if param.help:
                    first_words = " ".join(param.help.split()[:3])
                    assert first_words in " ".join(section.split()), (path, param.help)
            elif isinstance(param, click.Argument):
                assert param.make_metavar(ctx) in section, (path, param.name)
        if command.help:
            first_line = command.help.strip().splitlines()[0].strip()
            assert " ".join(first_line.split()) in " ".join(section.split()), path


def test_the_global_options_are_on_the_page() -> None:
    page = _plain(render(cli))
    options = page.split(".SH OPTIONS", 1)[1].split(".SH COMMANDS", 1)[0]
    for flag in ("-c, --config FILE", "-l, --log-level", "--version", "-h, --help"):
        assert flag in options


def test_roff_requests_and_escapes_in_help_text_stay_text() -> None:
    assert escape(".hidden\n'quote\nback\\slash -x") == "\\&.hidden\n\\&'quote\nback\\eslash \\-x"


def test_man_renders_the_page_without_a_warning(tmp_path: Path) -> None:
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.fail("man and groff are needed: apt-get install man-db groff-base")
    out = tmp_path / "build" / "man" / "saline.1"
    assert main(["-o", str(out)]) == 0
    env = {**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}
    shown = subprocess.run(
        ["man", "--warnings=w", "-l", str(out)], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert shown.stdout.startswith("SALINE(1)")
    text = " ".join(shown.stdout.split())
    assert "saline run [OPTIONS] TARGET FUNCTION [ARGUMENTS]..." in text
    assert "-T, --tgt-type [glob|list|grain|compound]" in text


def test_the_page_builds_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "saline.1"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "86400"}
    subprocess.run(
        [sys.executable, "-m", "saline.cli.manpage", "-o", str(out)], check=True, env=env
    )
    assert out.read_text().startswith('.TH SALINE 1 "1970-01-02" "saline ')
