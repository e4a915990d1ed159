"""Shell completion through click's protocol (COMP_WORDS / COMP_CWORD / _SALINE_COMPLETE),
as the scripts of ``saline completion bash|zsh`` drive it. Values asked of a master are
tested against a real lab in tests/integration/test_cli_surface.py."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from saline.cli.completion import COMPLETE_VAR, COMPLETERS, MASTER_TIMEOUT, register
from saline.cli.main import COMMANDS, cli


@pytest.fixture(autouse=True)
def registered() -> None:
    register()


def complete(line: str, shell: str = "bash", env: dict[str, str] | None = None) -> list[str]:
    """The values the shell would offer for the last word of ``line`` (a trailing space:
    a new, empty word)."""
    words = line.split(" ")
    result = CliRunner().invoke(
        cli,
        env={
            COMPLETE_VAR: f"{shell}_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            **(env or {}),
        },
        prog_name="saline",
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line]
    if shell == "bash":  # "type,value" per line
        return [entry.partition(",")[2] for entry in lines]
    return lines[1::3]  # zsh: type, value, help per item


def test_commands_complete() -> None:
    assert complete("saline ") == sorted(COMMANDS)
    assert complete("saline r") == [c for c in sorted(COMMANDS) if c.startswith("r")]
    assert {"reactor", "run"} <= set(complete("saline r"))
    assert complete("saline key a") == ["accept"]
    assert complete("saline jobs ") == ["list", "show", "wait"]
    assert {"state", "status"} <= set(complete("saline st", shell="zsh"))
    assert complete("saline st", shell="zsh") == [c for c in sorted(COMMANDS) if c[:2] == "st"]


def test_options_and_their_values_complete() -> None:
    assert {"--config", "--log-level", "--help", "--version"} <= set(complete("saline --"))
    options = complete("saline run be1 test.ping --t")
    assert {"--tgt-type", "--timeout"} <= set(options)
    assert all(o.startswith("--t") for o in options)
    assert complete("saline run be1 test.ping --out ") == ["human", "json", "yaml"]
    assert complete("saline -l w") == ["warning"]
    assert complete("saline master --log-format ") == ["text", "json"]
    assert complete("saline completion ") == ["bash", "zsh"]


def test_no_master_completes_nothing_at_once(tmp_path: Path) -> None:
    config = tmp_path / "master.yaml"
    config.write_text(f"sock_dir: {tmp_path / 'nowhere'}\n")
    started = time.monotonic()
    assert complete(f"saline -c {config} run ") == []
    assert complete("saline run b", env={"SALINE_CONFIG": str(tmp_path / "absent.yaml")}) == []
    assert time.monotonic() - started < MASTER_TIMEOUT


@pytest.fixture
def silent_master(tmp_path: Path) -> Iterator[Path]:
    """A client socket that accepts connections and never answers (a master stuck)."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_dir / "client.sock"))
    server.listen(8)
    config = tmp_path / "master.yaml"
    config.write_text(f"sock_dir: {sock_dir}\n")
    yield config
    server.close()


def test_a_master_that_does_not_answer_completes_nothing_within_the_timeout(
    silent_master: Path,
) -> None:
    started = time.monotonic()
    assert complete(f"saline -c {silent_master} key delete ") == []
    elapsed = time.monotonic() - started
    assert MASTER_TIMEOUT <= elapsed < MASTER_TIMEOUT + 1.5


def test_every_completer_names_a_parameter_of_the_command_tree() -> None:
    for (path, name), _ in COMPLETERS.items():
        command: click.Command = cli
        ctx = click.Context(cli, info_name="saline")
        for word in path.split():
            assert isinstance(command, click.Group), path
            sub = command.get_command(ctx, word)
            assert sub is not None, f"no command {path!r}"
            command = sub
        assert name in {p.name for p in command.params}, f"{path!r} has no parameter {name!r}"


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("bash", f"{COMPLETE_VAR}=bash_complete $1"),
        ("zsh", "#compdef saline"),
    ],
)
def test_completion_prints_the_script_of_the_shell(shell: str, expected: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell], prog_name="saline")
    assert result.exit_code == 0, result.output
    assert expected in result.output
    assert "_saline_completion" in result.output


def test_completion_refuses_other_shells() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"], prog_name="saline")
    assert result.exit_code == 2
    assert "'tcsh' is not one of" in result.output
