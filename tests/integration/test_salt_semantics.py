"""What a SaltStack operator's fingers expect, through the real CLI against a lab:
summary counts, shell syntax refused before anything runs, watch without doubles."""

import json
import textwrap
import time
from pathlib import Path

from saline.keys import KeyRing, KeyState, generate_keypair
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


# -- CLI habits ------------------------------------------------------------------------


def _ids(lab: Lab, *args: str) -> set[str]:
    proc = saline(lab, "run", *args, "test.ping", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout)["returns"])


def test_salts_target_shortcuts(lab: Lab) -> None:
    assert _ids(lab, "-C", "G@role:frontend or be1") == {"fe1", "fe2", "be1"}
    assert _ids(lab, "-G", "role:backend") == {"be1", "be2"}
    assert _ids(lab, "-L", "be2,fe2") == {"be2", "fe2"}
    assert _ids(lab, "-E", "fe[0-9]") == {"fe1", "fe2"}
    proc = saline(lab, "run", "-C", "-T", "list", "be1", "test.ping")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_unknown_options_are_errors_not_arguments(lab: Lab) -> None:
    proc = saline(lab, "run", "*", "test.ping", "--bogus")
    assert proc.returncode == 2
    assert "No such option '--bogus'" in proc.stderr
    # after --, a word starting with - is an argument
    proc = saline(lab, "run", "be1", "test.echo", "--out", "json", "--", "-x")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["returns"]["be1"]["return"] == "-x"


def test_a_target_naming_a_pending_key_says_how_to_accept_it(lab: Lab) -> None:
    ring = KeyRing(lab.directory / "master" / "pki")
    ring.add("newnode", generate_keypair().public, KeyState.PENDING)
    try:
        proc = saline(lab, "run", "newnode", "test.ping")
        assert proc.returncode == 3
        assert "the key of newnode is pending: accept it with `saline key accept newnode`" in (
            proc.stderr
        )
    finally:
        ring.delete("newnode")


def test_looking_for_name_init_is_not_a_refusal(lab: Lab, tmp_path: Path) -> None:
    (lab.directory / "states" / "nested").mkdir(exist_ok=True)
    (lab.directory / "states" / "nested" / "init.yaml").write_text(
        f"{tmp_path / 'n'}:\n  file.managed:\n    - contents: x\n"
    )

    def refused() -> int:
        doc = json.loads(saline(lab, "status", "--out", "json").stdout)
        return int(doc["refusals"].get("file_refused", 0))

    before = refused()
    proc = saline(lab, "state", "apply", "be1", "nested")
    assert proc.returncode == 0, proc.stdout
    assert refused() == before  # nested.yaml was asked for first and missed: routine


def test_orchestrate_names_a_missing_var_and_refuses_an_unknown_one(lab: Lab) -> None:
    (lab.directory / "runbooks" / "needsvar.yaml").write_text(
        textwrap.dedent(
            """
            name: needsvar
            requires: [node]
            vars: {mode: check}
            steps:
              - name: ping
                run: {target: "{{ vars.node }}", tgt_type: list, function: test.ping}
            """
        )
    )
    proc = saline(lab, "orchestrate", "needsvar")
    assert proc.returncode == 1 and "runbook needsvar needs --var node=..." in proc.stderr
    proc = saline(lab, "orchestrate", "needsvar", "--var", "node=be1", "--var", "nod=x")
    assert proc.returncode == 1
    assert "runbook needsvar has no var nod (it takes: mode, node)" in proc.stderr
    proc = saline(lab, "orchestrate", "needsvar", "--var", "node=be1")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_async_prints_the_jid_at_once_and_jobs_wait_gets_the_returns(lab: Lab) -> None:
    started = time.monotonic()
    proc = saline(lab, "run", "be1,fe1", "-T", "list", "test.sleep", "4", "-t", "30", "--async")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 3.5  # did not wait for the sleep
    jid = proc.stdout.strip()
    assert f"`saline jobs wait {jid}`" in proc.stderr
    proc = saline(lab, "jobs", "wait", jid, "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted(doc["returns"]) == ["be1", "fe1"]
    assert all(r["success"] for r in doc["returns"].values())
    # a wait shorter than the job: reported, exit code as `saline run` (timed out)
    proc = saline(lab, "run", "be1", "test.sleep", "5", "-t", "30", "--async")
    jid = proc.stdout.strip()
    proc = saline(lab, "jobs", "wait", jid, "-t", "0.5")
    assert proc.returncode == 12 and "NOT RETURNED" in proc.stdout


def test_pillar_items_and_get_mask_secrets(lab: Lab) -> None:
    pillar = lab.directory / "pillar"
    (pillar / "top.yaml").write_text("'be1': [site]\n")
    (pillar / "site.yaml").write_text(
        "site:\n  name: lab\n  db: {user: chef, password: !secret s3cr3t-pillar}\n"
    )
    try:
        proc = saline(lab, "run", "be1", "pillar.items", "--out", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["returns"]["be1"]["return"] == {
            "site": {"name": "lab", "db": {"user": "chef", "password": "***"}}
        }
        assert "s3cr3t" not in proc.stdout
        proc = saline(lab, "run", "be1", "pillar.get", "site:db:user", "--out", "json")
        assert json.loads(proc.stdout)["returns"]["be1"]["return"] == "chef"
        args = ("pillar.get", "site:nope", "default=fallback", "--out", "json")
        proc = saline(lab, "run", "be1", *args)
        assert json.loads(proc.stdout)["returns"]["be1"]["return"] == "fallback"
    finally:
        (pillar / "top.yaml").unlink()


def test_sys_state_doc_documents_state_functions(lab: Lab) -> None:
    proc = saline(lab, "run", "be1", "sys.state_doc", "cmd", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)["returns"]["be1"]["return"]
    assert sorted(docs) == ["cmd.run", "cmd.wait"]
    assert "unless" in docs["cmd.run"]
