"""SIGHUP reloads what can change live — rules and runbooks, the schedule, client_acl, the
log level — says what it reloaded in one log line, and names what needs a restart. A bad
config file changes nothing, and the daemon serves on."""

import json
import os
import signal
import textwrap
from pathlib import Path

import yaml

from saline.lab.lab import Lab
from tests.support import saline, wait_for


def _log(lab: Lab, name: str) -> str:
    path = lab.directory / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _reloads(lab: Lab, name: str) -> list[str]:
    return [line for line in _log(lab, name).splitlines() if "on SIGHUP" in line]


def _hup(lab: Lab, name: str) -> str:
    """SIGHUP one lab process; the log line that answers it."""
    before = len(_reloads(lab, name))
    os.kill(lab.processes()[name]["pid"], signal.SIGHUP)
    wait_for(lambda: len(_reloads(lab, name)) > before, 15, f"{name} answers SIGHUP")
    return _reloads(lab, name)[-1]


def _edit(path: Path, **changes: object) -> None:
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))


def test_sighup_reloads_the_masters_live_parts(fresh_lab: Lab) -> None:
    lab = fresh_lab
    (lab.directory / "reactors" / "hup.yaml").write_text(
        textwrap.dedent(
            """\
            - name: hup-rule
              on: test/hup
              do: [{run: {target: be1, function: test.ping}}]
            """
        )
    )
    schedule = [{"name": "hup-ping", "target": "be1", "every": 3600, "states": []}]
    _edit(
        lab.master_config,
        log_level="debug",
        client_acl={"nobody": ["test.*"]},
        schedule=schedule,
        port=1,
    )
    line = _hup(lab, "master")
    assert "master reloaded on SIGHUP: loaded" in line
    assert "schedule: 1 entries" in line and "client_acl: 1 users" in line
    assert "log level debug" in line and "a restart is needed for: port" in line
    listed = json.loads(saline(lab, "reactor", "list", "--out", "json").stdout)
    assert "hup-rule" in {r["name"] for r in listed["rules"]}
    sock = Path(yaml.safe_load(lab.master_config.read_text())["sock_dir"]) / "client.sock"
    assert sock.stat().st_mode & 0o777 == 0o666, "open to the client_acl users now"

    (lab.directory / "reactors" / "hup.yaml").write_text("- name: broken\n  on: x\n")
    line = _hup(lab, "master")
    assert "kept the" in line and "hup.yaml" in line, line
    listed = json.loads(saline(lab, "reactor", "list", "--out", "json").stdout)
    assert "hup-rule" in {r["name"] for r in listed["rules"]}, "the old rules stay"


def test_a_bad_config_file_changes_nothing(fresh_lab: Lab) -> None:
    lab = fresh_lab
    good = lab.master_config.read_text()
    lab.master_config.write_text(good + "\nno_such_setting: 1\n")
    before = len([x for x in _log(lab, "master").splitlines() if "reload on SIGHUP failed" in x])
    os.kill(lab.processes()["master"]["pid"], signal.SIGHUP)
    wait_for(
        lambda: len([x for x in _log(lab, "master").splitlines() if "SIGHUP failed" in x]) > before,
        15,
        "the master says the reload failed",
    )
    assert "no_such_setting" in _log(lab, "master")
    assert saline(lab, "run", "be1", "test.ping").returncode == 0, "it serves on"


def test_sighup_reloads_a_minions_log_level(fresh_lab: Lab) -> None:
    lab = fresh_lab
    config = Path(lab.processes()["be1"]["config"])
    _edit(config, log_level="debug", heartbeat_interval=7.0)
    line = _hup(lab, "be1")
    assert "minion reloaded on SIGHUP: log level debug" in line
    assert "a restart is needed for: heartbeat_interval" in line
    assert saline(lab, "run", "be1", "test.ping").returncode == 0
