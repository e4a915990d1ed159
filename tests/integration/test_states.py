"""States through real master and minion processes: file server, pillar, test mode, watch,
secrets, and scheduled enforcement repairing drift."""

import json
import os
import textwrap
from pathlib import Path
from typing import Any

from saline.lab.lab import Lab
from tests.support import events, restart_master, saline, wait_for


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def apply(lab: Lab, target: str, *states: str, test: bool = False) -> tuple[int, dict[str, Any]]:
    args = ["state", "apply", target, *states, "--out", "json"]
    if test:
        args.append("--test")
    proc = saline(lab, *args, timeout=120)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(f"rc={proc.returncode} {proc.stdout!r} {proc.stderr!r}") from e


def results(doc: dict[str, Any], minion: str) -> list[dict[str, Any]]:
    value = doc["returns"][minion]["return"]
    assert isinstance(value, list), value
    return value


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


def test_apply_test_mode_idempotency_and_pillar(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    node = tmp_path / "node"
    node.mkdir()
    (node / "keep.txt").write_text("untouched\n")
    write(lab.directory / "states" / "top.yaml", "'G@role:backend': [web]\n")
    write(
        lab.directory / "states" / "web" / "init.yaml",
        f"""\
        {node}/app.conf:
          file.managed:
            - source: saline://web/app.conf.j2
            - template: jinja
            - mode: "0640"
        """,
    )
    write(
        lab.directory / "states" / "web" / "app.conf.j2",
        "role {{ grains.role }} on {{ minion_id }}\nport {{ pillar.web.port }}\n",
    )
    write(lab.directory / "pillar" / "top.yaml", "'*': [common]\n'be1': [be1only]\n")
    write(lab.directory / "pillar" / "common.yaml", "web: {port: 8080}\n")
    write(lab.directory / "pillar" / "be1only.yaml", "private: {token: be1-eyes-only}\n")

    before = snapshot(node)
    code, doc = apply(lab, "be1", test=True)
    assert code == 0, doc
    [chunk] = results(doc, "be1")
    assert chunk["result"] is None and chunk["changes"], "test mode reports what would change"
    assert snapshot(node) == before, "test mode changes nothing on the node"

    code, doc = apply(lab, "be1")
    assert code == 0, doc
    assert (node / "app.conf").read_text() == "role backend on be1\nport 8080\n"
    assert oct((node / "app.conf").stat().st_mode & 0o777) == "0o640"
    assert results(doc, "be1")[0]["changes"]

    code, doc = apply(lab, "be1")
    [chunk] = results(doc, "be1")
    assert code == 0 and chunk["result"] is True and chunk["changes"] == {}, "idempotent"

    # pillar isolation: fe1's pillar has no trace of be1's private data
    write(
        lab.directory / "states" / "leak.yaml",
        f"""\
        {node}/pillar-{{{{ minion_id }}}}.json:
          file.managed:
            - contents: '{{{{ pillar | tojson }}}}'
        """,
    )
    code, doc = apply(lab, "be1,fe1", "leak", "-T", "list")
    assert code == 0, doc
    assert "be1-eyes-only" in (node / "pillar-be1.json").read_text()
    assert json.loads((node / "pillar-fe1.json").read_text()) == {"web": {"port": 8080}}


def test_secrets_never_in_returns_or_logs(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    secret = "s3cr3t-do-not-print"
    write(lab.directory / "pillar" / "top.yaml", "'*': [creds]\n")
    write(lab.directory / "pillar" / "creds.yaml", f"db: {{password: !secret {secret}}}\n")
    write(
        lab.directory / "states" / "creds.yaml",
        f"""\
        {tmp_path}/creds.conf:
          file.managed:
            - contents: "password={{{{ pillar.db.password }}}}\\n"
        """,
    )
    code, doc = apply(lab, "be1", "creds")
    assert code == 0, doc
    assert (tmp_path / "creds.conf").read_text() == f"password={secret}\n"
    assert secret not in json.dumps(doc)
    stored = saline(lab, "jobs", "show", doc["jid"], "--out", "json").stdout
    assert secret not in stored and "***" in stored
    for log in (lab.directory / "logs").iterdir():
        assert secret not in log.read_text(errors="replace"), log


def test_file_server_refuses_escapes_through_a_state(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    write(
        lab.directory / "states" / "escape.yaml",
        f"""\
        {tmp_path}/stolen:
          file.managed:
            - source: saline://../master/pki/master.key
        """,
    )
    code, doc = apply(lab, "be1", "escape")
    assert code == 11
    assert not (tmp_path / "stolen").exists()
    assert "refused" in json.dumps(doc["returns"]["be1"]["return"])


def test_watch_restarts_a_real_service(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    conf = tmp_path / "demo.conf"
    write(
        lab.directory / "states" / "demo.yaml",
        f"""\
        {conf}:
          file.managed:
            - contents: "{{{{ pillar.get('demo_version', 1) }}}}\\n"
        demo:
          service.running:
            - watch:
              - file: {conf}
        """,
    )
    code, doc = apply(lab, "fe1", "demo")
    assert code == 0, doc
    pidfile = lab.directory / "minions" / "fe1" / "cache" / "services" / "demo.pid"
    first_pid = int(pidfile.read_text().split()[0])
    code, doc = apply(lab, "fe1", "demo")
    assert int(pidfile.read_text().split()[0]) == first_pid, "no change, no restart"
    write(lab.directory / "pillar" / "top.yaml", "'fe1': [demo]\n")
    write(lab.directory / "pillar" / "demo.yaml", "demo_version: 2\n")
    code, doc = apply(lab, "fe1", "demo")
    assert code == 0, doc
    assert conf.read_text() == "2\n"
    assert int(pidfile.read_text().split()[0]) != first_pid, "the watched change restarted it"
    assert os.path.exists(f"/proc/{int(pidfile.read_text().split()[0])}")


def test_bad_state_file_names_file_and_line(fresh_lab: Lab) -> None:
    lab = fresh_lab
    write(lab.directory / "states" / "broken.yaml", "/tmp/x:\n  file.managed:\n    - mdoe: 1\n")
    code, doc = apply(lab, "be1", "broken")
    assert code == 11
    message = doc["returns"]["be1"]["return"]["message"]
    assert "broken.yaml:3" in message and "mdoe" in message


def test_scheduled_enforcement_repairs_drift(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    target = tmp_path / "enforced.conf"
    write(lab.directory / "states" / "top.yaml", "'be1': [enforced]\n")
    write(
        lab.directory / "states" / "enforced.yaml",
        f"""\
        {target}:
          file.managed:
            - contents: "desired\\n"
        """,
    )
    restart_master(lab, schedule=[{"name": "enforce", "target": "be1", "every": 1}])
    wait_for(lambda: events(lab, "saline/state/be1/drift"), 30, "the first run's drift")
    [first] = events(lab, "saline/state/be1/drift")  # it created the file
    assert target.read_text() == "desired\n"

    def applied() -> list[dict[str, Any]]:
        return [
            e
            for e in events(lab, "saline/job/*/ret/be1", since=first["seq"])
            if e["data"].get("fun") == "state.apply"
        ]

    # converged runs follow, and none of them is drift
    wait_for(lambda: len(applied()) >= 2, 30, "two converged runs")
    assert events(lab, "saline/state/be1/drift", since=first["seq"]) == []
    target.write_text("changed by hand\n")
    wait_for(
        lambda: events(lab, "saline/state/be1/drift", since=first["seq"]), 30, "the repair's drift"
    )
    [repair] = events(lab, "saline/state/be1/drift", since=first["seq"])
    assert target.read_text() == "desired\n"
    assert repair["data"]["states"][0]["name"] == str(target)
    jobs = json.loads(saline(lab, "jobs", "list", "--out", "json").stdout)
    assert any(j["user"] == "schedule" and j["fun"] == "state.apply" for j in jobs)


def test_show_renders_without_applying(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    node = tmp_path / "node"
    node.mkdir()
    write(
        lab.directory / "states" / "shown.yaml",
        f"""\
        {node}/shown-{{{{ grains.role }}}}:
          file.managed:
            - contents: hello
        """,
    )
    proc = saline(lab, "state", "show", "fe1", "shown", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    [chunk] = json.loads(proc.stdout)["returns"]["fe1"]["return"]
    assert chunk["id"] == f"{node}/shown-frontend"
    assert (chunk["module"], chunk["function"]) == ("file", "managed")
    assert not list(node.iterdir()), "show applies nothing"
