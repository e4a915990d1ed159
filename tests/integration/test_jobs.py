"""Ad-hoc jobs through a real master and real minion processes: targeting, outcomes, batches."""

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from saline.lab.lab import Lab
from tests.support import events, run_json, saline, wait_for

ALL = {"be1", "be2", "fe1", "fe2"}


def test_ping_all(lab: Lab) -> None:
    code, doc = run_json(lab, "*", "test.ping")
    assert code == 0
    assert set(doc["returns"]) == ALL
    assert all(r["success"] and r["return"] is True for r in doc["returns"].values())
    assert doc["missing"] == []


@pytest.mark.parametrize(
    ("target", "tgt_type", "expected"),
    [
        ("be*", "glob", {"be1", "be2"}),
        ("fe1,be2", "list", {"fe1", "be2"}),
        ("role:frontend", "grain", {"fe1", "fe2"}),
        ("G@role:backend and not be2", "compound", {"be1"}),
        ("L@be1,be2 or fe*", "compound", ALL),
        ("( G@role:frontend or be1 ) and not fe2", "compound", {"fe1", "be1"}),
    ],
)
def test_targeting(lab: Lab, target: str, tgt_type: str, expected: set[str]) -> None:
    code, doc = run_json(lab, target, "grains.get", "id", "-T", tgt_type)
    assert code == 0
    assert set(doc["returns"]) == expected
    assert {m: r["return"] for m, r in doc["returns"].items()} == {m: m for m in expected}


def test_no_match_exit_code(lab: Lab) -> None:
    code, doc = run_json(lab, "nosuch*", "test.ping")
    assert code == 3
    assert doc["returns"] == {}


def test_bad_target_is_a_clear_error(lab: Lab) -> None:
    proc = saline(lab, "run", "-T", "compound", "G@role:backend and", "test.ping")
    assert proc.returncode == 1
    assert "dangling 'and': nothing follows it, at position 15" in proc.stderr, proc.stderr


def test_jobs_reach_only_targeted_minions(lab: Lab) -> None:
    code, doc = run_json(lab, "be1", "test.echo", "only-be1")
    assert code == 0 and set(doc["returns"]) == {"be1"}
    jid = doc["jid"]
    logs = {m: (lab.directory / "logs" / f"{m}.log").read_text() for m in ALL}
    assert f"job {jid}" in logs["be1"]
    assert all(f"job {jid}" not in logs[m] for m in ALL - {"be1"})


def test_args_and_kwargs_reach_the_function(lab: Lab, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    code, doc = run_json(lab, "be1", "file.write", str(target), "hello saline", "mode=0600")
    assert code == 0, doc
    assert target.read_text() == "hello saline"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    code, doc = run_json(lab, "be1", "cmd.run", "pwd", f"cwd={tmp_path}")
    assert doc["returns"]["be1"]["return"]["stdout"].strip() == str(tmp_path)


def test_four_outcomes_are_distinct(fresh_lab: Lab) -> None:
    lab = fresh_lab  # be1, be2, fe1
    victim = int(lab.state["minions"]["fe1"]["pid"])
    os.kill(victim, 9)
    wait_for(lambda: events(lab, "saline/minion/fe1/lost"), 15, "fe1 lost")
    script = 'case "$SALINE_MINION_ID" in be1) exit 0;; be2) exit 3;; esac'
    code, doc = run_json(lab, "*", "cmd.run", script, "shell=true")
    assert doc["returns"]["be1"]["success"] is True
    assert doc["returns"]["be2"]["success"] is False
    assert doc["returns"]["be2"]["retcode"] == 3
    assert doc["missing"] == ["fe1"]
    assert code == 10 + 1 + 4  # failed + not reached

    code, doc = run_json(lab, "be1", "test.sleep", "30", "-t", "1")
    assert doc["timed_out"] == ["be1"] and doc["returns"] == {}
    assert code == 10 + 2


def test_offline_minion_reported_at_once(fresh_lab: Lab) -> None:
    lab = fresh_lab
    os.kill(int(lab.state["minions"]["be2"]["pid"]), 9)
    wait_for(lambda: events(lab, "saline/minion/be2/lost"), 15, "be2 lost")
    started = time.monotonic()
    code, doc = run_json(lab, "*", "test.ping", "-t", "30")
    elapsed = time.monotonic() - started
    assert doc["missing"] == ["be2"]
    assert set(doc["returns"]) == {"be1", "fe1"}
    assert code == 14
    assert elapsed < 30, "an offline minion must not be waited for until the timeout"


@pytest.mark.parametrize("batch", ["2", "50%", "34%"])  # of 4 minions: 2, 2, 2 (rounded up)
def test_batch_never_exceeds_its_size(lab: Lab, tmp_path: Path, batch: str) -> None:
    log = tmp_path / "intervals"
    script = (
        f'echo "start $SALINE_MINION_ID $(date +%s.%N)" >> {log}; sleep 0.3; '
        f'echo "end $SALINE_MINION_ID $(date +%s.%N)" >> {log}'
    )
    code, doc = run_json(lab, "*", "cmd.run", script, "shell=true", "--batch", batch)
    assert code == 0 and set(doc["returns"]) == ALL
    running, peak = 0, 0
    rows = sorted(
        (float(t), kind) for kind, _, t in (ln.split() for ln in log.read_text().splitlines())
    )
    for _, kind in rows:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_returns_stream_as_they_arrive(lab: Lab) -> None:
    script = 'case "$SALINE_MINION_ID" in be1) echo fast;; *) sleep 3;; esac'
    env = {**os.environ, "SALINE_CONFIG": str(lab.master_config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saline.cli.main", "run", "*", "cmd.run", script, "shell=true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("be1:")
    assert proc.poll() is None, "be1's return must print while the others still run"
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "answered" in err, "a long job reports progress on stderr"


def test_outputs_json_and_yaml(lab: Lab) -> None:
    proc = saline(lab, "run", "fe2", "test.echo", "x", "--out", "yaml")
    assert proc.returncode == 0
    assert "fe2:" in proc.stdout and "return: x" in proc.stdout
    proc = saline(lab, "run", "fe2", "test.version", "--out", "json")
    assert json.loads(proc.stdout)["returns"]["fe2"]["return"] == "0.1.0"


def test_jobs_list_and_show(lab: Lab) -> None:
    code, doc = run_json(lab, "be*", "test.echo", "remember me")
    assert code == 0
    proc = saline(lab, "jobs", "list", "-n", "50", "--out", "json")
    listed = {row["jid"]: row for row in json.loads(proc.stdout)}
    assert listed[doc["jid"]]["returned"] == 2
    proc = saline(lab, "jobs", "show", doc["jid"], "--out", "json")
    shown = json.loads(proc.stdout)
    assert shown["job"]["fun"] == "test.echo"
    assert {m: r["return"] for m, r in shown["returns"].items()} == {
        "be1": "remember me",
        "be2": "remember me",
    }
    jids = list(listed)
    assert jids == sorted(jids, reverse=True), "jids sort by time"


def test_events_stream_live(lab: Lab) -> None:
    env = {**os.environ, "SALINE_CONFIG": str(lab.master_config)}
    argv = [sys.executable, "-m", "saline.cli.main", "events", "--tag", "saline/job/*"]
    watcher = subprocess.Popen([*argv, "--out", "json"], stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert watcher.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # the watcher subscribes asynchronously: run jobs until one of them shows up live
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while time.monotonic() < deadline:
            _, doc = run_json(lab, "fe1", "test.ping")
            want = {f"saline/job/{doc['jid']}/new", f"saline/job/{doc['jid']}/ret/fe1"}
            with contextlib.suppress(queue.Empty):
                while not want <= set(seen):
                    seen.append(json.loads(lines.get(timeout=2))["tag"])
            if want <= set(seen):  # a job entirely after the subscription was live
                break
        assert want <= set(seen)
    finally:
        watcher.kill()
        watcher.wait()


def test_presence_events_are_stored(lab: Lab) -> None:
    tags = {e["tag"] for e in events(lab, "saline/minion/*")}
    assert {f"saline/minion/{m}/start" for m in ALL} <= tags
