"""``saline call`` through the real CLI: masterless (``--local``) with a node's own roots,
and with files and pillar from a real master over the node's own key, while the node's
minion daemon keeps running undisturbed."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.keys import load_or_create_keypair
from saline.lab.lab import Lab
from tests.support import events, online, run_json, saline, status

SECRET = "s3cr3t-local-pw"


def _call(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Any:
    """``saline [-c config] call ...`` with no SALINE_CONFIG unless ``env`` sets one."""
    environ = {k: v for k, v in os.environ.items() if k != "SALINE_CONFIG"}
    environ.update(env or {})
    head = ["-c", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "saline.cli.main", *head, "call", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(f"rc={proc.returncode} {proc.stdout!r} {proc.stderr!r}") from e
    return doc


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A masterless node: a minion config with local file_roots and pillar_roots."""
    states, pillar = tmp_path / "states", tmp_path / "pillar"
    (states / "web").mkdir(parents=True)
    (states / "top.yaml").write_text("'G@role:backend': [web]\n'G@role:frontend': [broken]\n")
    (states / "web" / "init.yaml").write_text(
        f"{tmp_path / 'app.conf'}:\n"
        "  file.managed:\n"
        "    - source: saline://web/app.conf.j2\n"
        "    - template: jinja\n"
        "    - mode: '0640'\n"
    )
    (states / "web" / "app.conf.j2").write_text(
        "role {{ grains.role }} on {{ minion_id }}\nport {{ pillar.web.port }}\n"
        "password {{ pillar.web.password }}\n"
    )
    (states / "broken.yaml").write_text(
        "fails:\n  cmd.run:\n    - name: 'false'\n"
        f"after:\n  file.managed:\n    - name: {tmp_path / 'after'}\n    - contents: x\n"
    )
    pillar.mkdir()
    (pillar / "top.yaml").write_text("'G@role:backend': [web]\n")
    (pillar / "web.yaml").write_text(f"web: {{port: 8443, password: !secret {SECRET}}}\n")
    config = tmp_path / "minion.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "id": "solo1",
                "cachedir": str(tmp_path / "cache"),
                "pki_dir": str(tmp_path / "pki"),
                "service_provider": "supervisor",
                "grains": {"role": "backend"},
                "file_roots": [str(states)],
                "pillar_roots": [str(pillar)],
            }
        )
    )
    return config


def test_local_call_runs_a_function_without_a_master(node: Path) -> None:
    proc = _call(node, "--local", "test.echo", "hello", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    doc = _json(proc)
    assert doc["returns"] == {"solo1": {"success": True, "retcode": 0, "return": "hello"}}
    assert (doc["missing"], doc["timed_out"], doc["running"]) == ([], [], [])
    human = _call(node, "--local", "grains.get", "role")
    header, value = human.stdout.splitlines()[:2]
    assert human.returncode == 0 and header.startswith("solo1:") and value == "    backend"
    # the config from $SALINE_CONFIG, as the minion daemon reads it
    proc = _call(None, "--local", "test.ping", env={"SALINE_CONFIG": str(node)})
    assert proc.returncode == 0 and "True" in proc.stdout


def test_local_state_apply_with_local_pillar_test_mode_and_secrets(
    node: Path, tmp_path: Path
) -> None:
    target = tmp_path / "app.conf"
    proc = _call(node, "--local", "state.apply", "web", "test=true", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    [chunk] = _json(proc)["returns"]["solo1"]["return"]
    assert chunk["result"] is None and not target.exists()  # would change; nothing changed
    assert SECRET not in proc.stdout

    proc = _call(node, "--local", "state.apply")  # the highstate, human output
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.read_text() == f"role backend on solo1\nport 8443\npassword {SECRET}\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert SECRET not in proc.stdout + proc.stderr
    assert "+password ***" in proc.stdout  # printed as a state run, its diff masked

    proc = _call(node, "--local", "state.apply", "web", "--out", "json")
    [chunk] = _json(proc)["returns"]["solo1"]["return"]
    assert chunk["result"] is True and chunk["changes"] == {}  # a second run changes nothing

    proc = _call(node, "--local", "pillar.items", "--out", "json")
    assert _json(proc)["returns"]["solo1"]["return"] == {"web": {"port": 8443, "password": "***"}}


def test_local_call_exit_codes_are_those_of_run(node: Path, tmp_path: Path) -> None:
    proc = _call(node, "--local", "state.apply", "broken", "failhard=true")
    assert proc.returncode == 11, proc.stdout + proc.stderr
    assert not (tmp_path / "after").exists()

    proc = _call(node, "--local", "test.sleep", "30", "timeout=1")
    assert proc.returncode == 12
    assert "did not finish in 1s; killed" in proc.stdout
    assert "TIMED OUT on the minion" in proc.stdout

    proc = _call(node, "--local", "test.pnig")
    assert proc.returncode == 1
    assert "no function 'test.pnig' on this node (did you mean 'test.ping'?)" in proc.stderr

    proc = _call(node, "--local", "cmd.run", "echo a | tr a b")
    assert proc.returncode == 1 and "shell: true" in proc.stderr

    proc = _call(node, "--local", "test.sleep", "1", "timeout=soon")
    assert proc.returncode == 2 and "timeout= must be a number of seconds" in proc.stderr


def test_call_says_what_kind_of_config_it_got(tmp_path: Path) -> None:
    master = tmp_path / "master.yaml"
    master.write_text("interface: 127.0.0.1\nreactor_dirs: [/tmp/r]\n")
    proc = _call(master, "--local", "test.ping")
    assert proc.returncode == 1
    assert "this looks like a master config (it sets interface, reactor_dirs)" in proc.stderr


# -- with the master: files and pillar over the node's own key ---------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _presence_events(lab: Lab, minion_id: str) -> list[str]:
    return [e["tag"] for e in events(lab, f"saline/minion/{minion_id}/*")]


def test_call_gets_files_and_pillar_from_the_master_and_the_daemon_keeps_working(
    lab: Lab, tmp_path: Path
) -> None:
    states, pillar = lab.directory / "states", lab.directory / "pillar"
    target = tmp_path / "from-master.conf"
    _write(
        states / "callweb.yaml",
        f"{target}:\n  file.managed:\n    - source: saline://callweb.j2\n    - template: jinja\n",
    )
    _write(states / "callweb.j2", "{{ minion_id }} {{ pillar.callweb.port }}\n")
    _write(pillar / "top.yaml", "'G@role:backend': [callweb]\n")
    _write(pillar / "callweb.yaml", f"callweb: {{port: 9443, token: !secret {SECRET}}}\n")
    config = Path(lab.state["minions"]["be1"]["config"])
    before = _presence_events(lab, "be1")
    refusals = status(lab)["refusals"]

    proc = saline(lab, "-c", str(config), "call", "state.apply", "callweb", "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.read_text() == "be1 9443\n"
    proc = saline(lab, "-c", str(config), "call", "pillar.get", "callweb:token")
    assert proc.returncode == 0 and "***" in proc.stdout and SECRET not in proc.stdout

    # the daemon with the same key is undisturbed: still online, no new session or loss,
    # nothing refused, and jobs still reach it
    assert "be1" in online(lab)
    code, doc = run_json(lab, "be1", "test.ping")
    assert code == 0 and doc["returns"]["be1"]["return"] is True
    assert _presence_events(lab, "be1") == before
    assert status(lab)["refusals"] == refusals


def test_call_with_a_key_the_master_has_not_accepted_says_so(lab: Lab, tmp_path: Path) -> None:
    config = yaml.safe_load(Path(lab.state["minions"]["fe1"]["config"]).read_text())
    load_or_create_keypair(tmp_path / "pki", "minion")  # a key of its own, unknown to the master
    config.update(pki_dir=str(tmp_path / "pki"), cachedir=str(tmp_path / "cache"))
    path = tmp_path / "minion.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = saline(lab, "-c", str(path), "call", "pillar.items")
    assert proc.returncode == 11, proc.stdout + proc.stderr
    assert "the master refused this node's key: it is not accepted" in proc.stdout
    assert "fe1" in online(lab)  # the real fe1 is untouched


def test_call_without_a_key_is_an_error_not_a_new_key(lab: Lab, tmp_path: Path) -> None:
    config = yaml.safe_load(Path(lab.state["minions"]["fe2"]["config"]).read_text())
    config.update(pki_dir=str(tmp_path / "pki"), cachedir=str(tmp_path / "cache"))
    path = tmp_path / "minion.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = saline(lab, "-c", str(path), "call", "pillar.items")
    assert proc.returncode == 1 and "cannot read keypair minion" in proc.stderr
    assert not (tmp_path / "pki" / "minion.key").exists()
