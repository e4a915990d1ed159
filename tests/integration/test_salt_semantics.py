"""What a SaltStack operator's fingers expect, through the real CLI against a lab:
summary counts, shell syntax refused before anything runs, watch without doubles."""

import json
import textwrap
from pathlib import Path

from saline.lab.lab import Lab
from tests.support import saline

ADVICE = "add `shell: true` (or `python_shell: true`), or split the arguments"


def _write(lab: Lab, name: str, text: str) -> None:
    (lab.directory / "states" / f"{name}.yaml").write_text(textwrap.dedent(text))


def _jobs(lab: Lab) -> list[str]:
    listed = saline(lab, "jobs", "list", "-n", "1000", "--out", "json")
    return [j["jid"] for j in json.loads(listed.stdout)]


def test_each_state_is_counted_once(lab: Lab, tmp_path: Path) -> None:
    target = tmp_path / "counted"
    _write(
        lab,
        "counts",
        f"""
        {target}:
          file.managed:
            - contents: "x"
        kept:
          cmd.run:
            - name: 'true'
            - creates: /
        broken:
          cmd.run:
            - name: 'false'
        after-broken:
          cmd.run:
            - name: 'true'
            - require:
              - cmd: broken
        """,
    )
    proc = saline(lab, "state", "apply", "be1", "counts")
    assert proc.returncode != 0
    assert "4 states: 1 ok, 1 changed, 1 failed, 1 skipped" in proc.stdout, proc.stdout
    proc = saline(lab, "state", "apply", "be1", "counts", "--failhard")
    # the file is in place now (ok), kept is ok, broken fails, the rest is not run
    assert "4 states: 2 ok, 1 failed, 1 skipped" in proc.stdout, proc.stdout
    assert "SKIPPED" in proc.stdout
    proc = saline(lab, "state", "apply", "be1", "counts", "--test")
    assert "would change" in proc.stdout and "states:" in proc.stdout


def test_shell_syntax_without_a_shell_is_refused_before_the_job_is_sent(
    lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "f"
    before = _jobs(lab)
    proc = saline(lab, "run", "be1", "cmd.run", f"echo x >> {out}")
    assert proc.returncode == 1
    assert f"'echo x >> {out}' uses shell syntax (`>>`) but runs without a shell" in proc.stderr
    assert ADVICE in proc.stderr
    assert _jobs(lab) == before  # nothing was sent, nothing stored
    for switch in ("shell=true", "python_shell=true"):
        proc = saline(lab, "run", "be1", "cmd.run", f"echo x >> {out}", switch)
        assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "x\nx\n"


def test_a_state_file_with_shell_syntax_fails_at_compile_time_naming_the_state(
    lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    _write(lab, "shelly", f"log:\n  cmd.run:\n    - name: echo x > {out}\n")
    proc = saline(lab, "state", "apply", "be1", "shelly", "--out", "json")
    doc = json.loads(proc.stdout)
    message = doc["returns"]["be1"]["return"]["message"]
    assert f"shelly.yaml:2: log: cmd.run: 'echo x > {out}' uses shell syntax (`>`)" in message
    assert ADVICE in message
    assert not out.exists()


def test_a_watch_in_test_mode_tells_one_story(lab: Lab, tmp_path: Path) -> None:
    conf, ran = tmp_path / "app.conf", tmp_path / "ran"
    _write(
        lab,
        "watching",
        f"""
        {conf}:
          file.managed:
            - contents: "v=1"
        echo ran >> {ran}:
          cmd.run:
            - shell: true
            - watch:
              - file: {conf}
        """,
    )
    proc = saline(lab, "state", "apply", "be1", "watching", "--test", "--out", "json")
    chunks = json.loads(proc.stdout)["returns"]["be1"]["return"]
    [command] = [c for c in chunks if c["state"] == "cmd.run"]
    assert command["comment"] == f"would run echo ran >> {ran}"  # not twice, joined by ';'
    assert not ran.exists()
    proc = saline(lab, "state", "apply", "be1", "watching")
    assert proc.returncode == 0, proc.stdout
    assert ran.read_text() == "ran\n"  # once: the command ran, the watch did not run it again


def test_a_runbooks_summary_names_the_states_each_minion_changed(lab: Lab, tmp_path: Path) -> None:
    conf = tmp_path / "rb.conf"
    _write(lab, "rbstate", f"{conf}:\n  file.managed:\n    - contents: 'v=1'\n")
    (lab.directory / "runbooks" / "touchconf.yaml").write_text(
        textwrap.dedent(
            """
            name: touchconf
            steps:
              - name: configure
                state: {target: be1, tgt_type: list, states: [rbstate]}
            """
        )
    )
    proc = saline(lab, "orchestrate", "touchconf", "--test")
    assert f"be1: would change 1: file.managed {conf}" in proc.stdout, proc.stdout
    assert not conf.exists()
    proc = saline(lab, "orchestrate", "touchconf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"be1: changed 1: file.managed {conf}" in proc.stdout, proc.stdout
    proc = saline(lab, "orchestrate", "touchconf")
    assert "be1: changed" not in proc.stdout  # in place: nothing to name
