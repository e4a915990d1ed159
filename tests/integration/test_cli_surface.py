"""What an operator's shell and ``ps`` show of a real lab: completion of minion ids and
function names asked of the master, and the process title of every daemon."""

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from saline.cli.completion import COMPLETE_VAR, register
from saline.cli.main import cli
from saline.lab.lab import Lab
from saline.lab.processes import cmdline
from tests.support import master_pid, minion_pid


def _complete_env(line: str) -> dict[str, str]:
    return {
        COMPLETE_VAR: "bash_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(line.split(" ")) - 1),
    }


def complete(line: str) -> list[str]:
    """Through click's completion protocol in this process (the scripts' protocol)."""
    register()
    result = CliRunner().invoke(cli, env=_complete_env(line), prog_name="saline")
    assert result.exit_code == 0, result.output
    return [e.partition(",")[2] for e in result.output.splitlines() if e]


def complete_in_shell(line: str, config: Path) -> list[str]:
    """As bash's completion function runs it: the real ``saline`` with the protocol's env."""
    env = {**os.environ, **_complete_env(line), "SALINE_CONFIG": str(config)}
    proc = subprocess.run(
        [sys.executable, "-m", "saline.cli.main"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return [e.partition(",")[2] for e in proc.stdout.splitlines() if e]


def test_targets_complete_with_the_accepted_minion_ids(lab: Lab) -> None:
    config = lab.master_config
    assert complete(f"saline -c {config} run b") == ["be1", "be2"]
    assert complete(f"saline -c {config} state apply f") == ["fe1", "fe2"]
    assert complete(f"saline -c {config} key finger ") == ["be1", "be2", "fe1", "fe2"]
    assert complete(f"saline -c {config} key accept ") == []  # nothing pending
    assert complete_in_shell("saline run ", config) == ["be1", "be2", "fe1", "fe2"]


def test_functions_complete_with_what_the_minions_listed(lab: Lab) -> None:
    config = lab.master_config
    assert complete(f"saline -c {config} run be1 test.p") == ["test.ping"]
    functions = complete_in_shell("saline run '*' ", config)
    assert {"cmd.run", "test.ping", "state.apply", "grains.get"} <= set(functions)
    assert functions == sorted(functions)
    assert complete_in_shell("saline run be1 no_such_mod", config) == []


def test_every_lab_process_is_titled_for_ps(lab: Lab) -> None:
    for minion_id, info in lab.state["minions"].items():
        pid = minion_pid(lab, minion_id)
        assert cmdline(pid) == f"saline-minion {minion_id} -c {info['config']}"
        assert Path(f"/proc/{pid}/comm").read_text() == "saline-minion\n"
    pid = master_pid(lab)
    assert cmdline(pid) == f"saline-master -c {lab.master_config}"
    assert Path(f"/proc/{pid}/comm").read_text() == "saline-master\n"
    # `ps aux` prints the full command line: each minion on a line of its own
    ps = subprocess.run(["ps", "auxww"], capture_output=True, text=True, check=True).stdout
    for minion_id in lab.state["minions"]:
        title = f"saline-minion {minion_id} -c {lab.directory}"
        [line] = [ln for ln in ps.splitlines() if title in ln]
        assert line.split()[1] == str(minion_pid(lab, minion_id))
