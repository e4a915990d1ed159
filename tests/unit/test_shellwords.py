"""Shell syntax in commands that run without a shell: found outside quotes, named, refused."""

from collections.abc import Callable
from pathlib import Path

import pytest

from minion.modules.base import Context
from saline.errors import ExecutionError, StateError
from saline.shellwords import refusal, shell_syntax
from states.engine import compile_states
from states.modules import REGISTRY
from tests.unit.test_state_engine import Files


@pytest.mark.parametrize(
    ("command", "found"),
    [
        ("echo x >> /tmp/f", [">>"]),
        ("ps aux | grep x", ["|"]),
        ("a && b || c; d &", ["&&", "||", ";", "&"]),
        ("sort < in > out", ["<", ">"]),
        ("echo $(id -u) `date`", ["$(", "`"]),
        ('echo "$(id -u)"', ["$("]),  # a shell would still run it inside double quotes
        ("ls /etc/*.conf", ["*"]),
        ("curl http://x/?a=1", ["?"]),
        ("ls [ab]", ["["]),
        ("echo 'a > b | c * $(x)'", []),  # quoted: data
        ('echo "a > b; c"', []),
        (r"echo a\>b", []),  # escaped
        ("systemctl restart etcd", []),
        ("chef-backend-ctl reconfigure --accept-license", []),
    ],
)
def test_shell_syntax_outside_quotes(command: str, found: list[str]) -> None:
    assert shell_syntax(command) == found


def test_the_refusal_names_the_place_the_syntax_and_the_fix() -> None:
    assert refusal("echo x >> /tmp/f", "log: cmd.run") == (
        "log: cmd.run: 'echo x >> /tmp/f' uses shell syntax (`>>`) but runs without a shell:"
        " add `shell: true` (or `python_shell: true`), or split the arguments"
    )
    assert refusal("echo x", "here") is None


def _compile(text: str) -> None:
    compile_states(
        ["main"],
        files=Files({"main.yaml": text}),
        minion_id="be1",
        grains={},
        pillar={},
        call=lambda fun, *a, **k: None,
        registry=REGISTRY,
    )


def test_a_state_with_shell_syntax_and_no_shell_does_not_compile() -> None:
    with pytest.raises(StateError) as info:
        _compile("log:\n  cmd.run:\n    - name: echo x >> /tmp/f\n")
    assert str(info.value) == (
        "main.yaml:2: log: cmd.run: 'echo x >> /tmp/f' uses shell syntax (`>>`) but runs"
        " without a shell: add `shell: true` (or `python_shell: true`), or split the arguments"
    )
    with pytest.raises(StateError, match=r"uses shell syntax \(`\|`\)"):
        _compile("w:\n  cmd.run:\n    - name: 'true'\n    - unless: grep x /etc/f | wc -l\n")


@pytest.mark.parametrize("switch", ["shell", "python_shell"])
def test_shell_true_or_salts_python_shell_compiles(switch: str) -> None:
    _compile(f"log:\n  cmd.run:\n    - name: echo x >> /tmp/f\n    - {switch}: true\n")


def test_the_execution_function_refuses_it_too(ctx_factory: Callable[[], Context]) -> None:
    from minion.modules import cmd

    ctx = ctx_factory()
    with pytest.raises(ExecutionError, match=r"uses shell syntax \(`>`\)"):
        cmd.run(ctx, "echo x > /dev/null")
    assert cmd.run(ctx, "echo x > /dev/null", python_shell=True).retcode == 0
    assert cmd.run(ctx, ["echo", "x", ">", "y"]).value["stdout"] == "x > y\n"  # argv: data


@pytest.fixture
def ctx_factory(tmp_path: Path) -> Callable[[], Context]:
    from minion.config import MinionConfig
    from minion.services.supervisor import SupervisorProvider

    def make() -> Context:
        config = MinionConfig(id="m1", cachedir=tmp_path / "c", pki_dir=tmp_path / "p")
        return Context("m1", config, {}, SupervisorProvider({}, tmp_path / "s"))

    return make
