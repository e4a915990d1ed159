"""Human output through the real CLI against a lab: colours (a terminal, a pipe,
--no-color, NO_COLOR, --force-color), --state-output, durations and totals, `jobs show`
printing a job as `run` did, `jobs list` filters applied by the master, event lines with
their seq, and errors as one readable line."""

import json
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from saline.lab.lab import Lab
from tests.support import run_json, saline, wait_for

GREEN, YELLOW, RED, CYAN = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[36m"
ANSI = "\x1b["


def _write(lab: Lab, name: str, text: str) -> None:
    (lab.directory / "states" / f"{name}.yaml").write_text(textwrap.dedent(text))


def _on_a_terminal(lab: Lab, *args: str, **env: str) -> str:
    """The CLI's stdout when stdout is a terminal (a pty); ``env`` replaces NO_COLOR."""
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update(SALINE_CONFIG=str(lab.master_config), **env)
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "saline.cli.main", *args],
        stdout=child,
        stderr=subprocess.DEVNULL,
        env=environ,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(parent, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=max(deadline - time.monotonic(), 1)) == 0
    finally:
        os.close(parent)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode()


def _jid(stderr: str) -> str:
    match = re.search(r"^jid (\d+):", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


# -- colour ---------------------------------------------------------------------------------


def test_colour_on_a_terminal_off_on_a_pipe_and_with_no_color(lab: Lab) -> None:
    on_tty = _on_a_terminal(lab, "run", "be1", "test.ping")
    assert f"{GREEN}be1" in on_tty
    assert ANSI not in _on_a_terminal(lab, "run", "be1", "test.ping", NO_COLOR="1")
    assert ANSI not in _on_a_terminal(lab, "run", "be1", "test.ping", "--no-color")
    assert f"{GREEN}be1" in _on_a_terminal(lab, "run", "be1", "test.ping", NO_COLOR="")
    piped = saline(lab, "run", "be1", "test.ping")
    assert piped.returncode == 0 and "be1:" in piped.stdout
    assert ANSI not in piped.stdout and ANSI not in piped.stderr
    forced = saline(lab, "run", "be1", "test.ping", "--force-color")
    assert f"{GREEN}be1" in forced.stdout and f"{GREEN}1 succeeded" in forced.stderr
    proc = saline(lab, "run", "be1", "test.ping", "--no-color", "--force-color")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_force_color_wins_over_no_color_in_the_environment(lab: Lab) -> None:
    env = {**os.environ, "SALINE_CONFIG": str(lab.master_config), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "saline.cli.main", "run", "be1", "test.ping"]
    forced = subprocess.run(
        [*argv, "--force-color"], capture_output=True, text=True, env=env, timeout=60
    )
    assert f"{GREEN}be1" in forced.stdout


def test_state_outcomes_are_coloured(lab: Lab, tmp_path: Path) -> None:
    _write(
        lab,
        "painted",
        f"""
        {tmp_path / "painted"}:
          file.managed:
            - contents: "x"
        kept:
          cmd.run:
            - name: 'true'
            - creates: /
        broken:
          cmd.run:
            - name: 'false'
        """,
    )
    proc = saline(lab, "state", "apply", "be1", "painted", "--test", "--force-color")
    assert f"{CYAN}would change" in proc.stdout, proc.stdout
    proc = saline(lab, "state", "apply", "be1", "painted", "--force-color")
    assert f"{YELLOW}     changed" in proc.stdout, proc.stdout
    assert f"{GREEN}          ok" in proc.stdout
    assert f"{RED}      FAILED" in proc.stdout and f"{RED}be1" in proc.stdout
    jid = _jid(proc.stderr)
    shown = saline(lab, "jobs", "show", jid, "--force-color")
    assert f"{RED}      FAILED" in shown.stdout, shown.stdout
    assert ANSI not in saline(lab, "jobs", "show", jid).stdout
    assert ANSI not in saline(lab, "state", "apply", "be1", "painted").stdout


# -- --state-output ---------------------------------------------------------------------------


def _three_outcomes(lab: Lab, path: Path) -> None:
    _write(
        lab,
        "outputs",
        f"""
        {path}:
          file.managed:
            - contents: "x"
        kept:
          cmd.run:
            - name: 'true'
            - creates: /
        broken:
          cmd.run:
            - name: 'false'
        """,
    )


def _state_lines(stdout: str) -> list[str]:
    """The lines of be1's block between its header and its summary."""
    lines = stdout.splitlines()
    assert re.fullmatch(r"be1:  \[FAILED\]  \(\d+ ms\)", lines[0]), stdout
    assert re.fullmatch(r"  3 states: 1 ok, 1 changed, 1 failed; run time \d+ ms", lines[-1])
    return lines[1:-1]


def test_state_output_full_terse_and_changes(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "made"
    _three_outcomes(lab, path)

    def apply(*args: str) -> list[str]:
        path.unlink(missing_ok=True)  # changed every time
        proc = saline(lab, *args)
        assert proc.returncode == 11, proc.stdout + proc.stderr
        return _state_lines(proc.stdout)

    full = _no_ms(apply("state", "apply", "be1", "outputs"))
    assert _no_ms(apply("state", "apply", "be1", "outputs", "--state-output", "full")) == full
    assert full[0] == f"       changed  file.managed {path}: created {path}"
    assert "            ok  cmd.run true: skipped: / already exists" in full
    assert any("diff:" in line for line in full) and any("retcode: 1" in line for line in full)

    terse = _no_ms(apply("state", "apply", "be1", "outputs", "--state-output", "terse"))
    assert terse == [
        f"       changed  file.managed {path}",
        "            ok  cmd.run true",
        "        FAILED  cmd.run false: command failed with retcode 1: false",
    ]
    changes = _no_ms(apply("state", "apply", "be1", "outputs", "--state-output", "changes"))
    # what changed or failed in full, the state left as it was on its terse line
    assert changes == [line if "cmd.run true" not in line else terse[1] for line in full]
    # `saline run ... state.apply` prints the same way
    via_run = apply("run", "be1", "state.apply", "outputs", "--state-output", "terse")
    assert _no_ms(via_run) == terse
    proc = saline(lab, "state", "apply", "be1", "outputs", "--state-output", "mixed")
    assert proc.returncode == 2 and "'full', 'terse', 'changes'" in proc.stderr


def _no_ms(lines: list[str]) -> list[str]:
    return [re.sub(r"  \(\d+ ms\)$", "", line) for line in lines]


# -- durations and totals -----------------------------------------------------------------


def test_each_minion_has_its_duration_and_a_run_has_totals(lab: Lab, tmp_path: Path) -> None:
    # one file per minion (they share this machine's file system)
    made = f"{tmp_path}/timed-{{{{ grains.id }}}}"
    _write(lab, "timed", f"{made}:\n  file.managed:\n    - contents: x\n")
    proc = saline(lab, "state", "apply", "be*", "timed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for minion in ("be1", "be2"):
        assert re.search(rf"^{minion}:  \(\d+ ms\)$", proc.stdout, re.MULTILINE), proc.stdout
    summary = r"1 state: 0 ok, 1 changed, 0 failed; run time \d+ ms"
    assert len(re.findall(rf"^  {summary}$", proc.stdout, re.MULTILINE)) == 2, proc.stdout
    total = r"total on 2 minions: 2 states: 0 ok, 2 changed, 0 failed; run time \d+ ms"
    assert re.search(rf"^{total}$", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"2 targeted, 2 succeeded, 0 failed, .*; took \d+", proc.stderr)
    proc = saline(lab, "run", "*", "test.ping")
    assert len(re.findall(r"^(be|fe)\d:  \(\d+ ms\)$", proc.stdout, re.MULTILINE)) == 4
    assert "total on" not in proc.stdout  # totals count states
    assert re.search(r"4 targeted, 4 succeeded, .*; took ", proc.stderr), proc.stderr


# -- jobs show ----------------------------------------------------------------------------


def test_jobs_show_prints_a_state_job_as_state_apply_did(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "shown"
    _three_outcomes(lab, path)
    applied = saline(lab, "state", "apply", "be1", "outputs", "--test")
    jid = _jid(applied.stderr)
    shown = saline(lab, "jobs", "show", jid)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"jid {jid}: state.apply outputs test=true failhard=false"
    assert re.fullmatch(
        r"  on 'be1' \(glob\), by \S+, started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[1]
    )
    printed = applied.stdout.splitlines()
    assert lines[2] == re.sub(r"  \(\d+ ms\)$", "", printed[0])  # stored returns: no duration
    assert lines[3:] == printed[1:]
    assert "1 targeted, 1 succeeded, 0 failed" in shown.stderr
    terse = saline(lab, "jobs", "show", jid, "--state-output", "terse").stdout.splitlines()
    assert _no_ms(terse[3:5]) == [
        f"  would change  file.managed {path}",
        "            ok  cmd.run true",
    ]


def test_jobs_show_json_and_yaml_keep_the_stored_job(lab: Lab) -> None:
    code, doc = run_json(lab, "be1", "test.echo", "kept as is")
    assert code == 0
    shown = json.loads(saline(lab, "jobs", "show", doc["jid"], "--out", "json").stdout)
    assert set(shown) == {"job", "returns"}
    assert set(shown["job"]) == {
        "jid", "fun", "args", "kwargs", "target", "tgt_type", "user", "created", "timeout",
        "minions", "missing",
    }  # fmt: skip
    assert shown["returns"] == {"be1": {"success": True, "retcode": 0, "return": "kept as is"}}
    as_yaml = yaml.safe_load(saline(lab, "jobs", "show", doc["jid"], "--out", "yaml").stdout)
    assert as_yaml == shown
    human = saline(lab, "jobs", "show", doc["jid"]).stdout.splitlines()
    assert human[0] == f"jid {doc['jid']}: test.echo 'kept as is'"
    assert human[2:] == ["be1:", "    kept as is"]


def test_jobs_show_of_a_failed_job_prints_its_error_as_one_line(lab: Lab) -> None:
    code, doc = run_json(lab, "fe1", "file.read", "/nonexistent/file")
    assert code == 11
    human = saline(lab, "jobs", "show", doc["jid"]).stdout.splitlines()
    assert human[2:] == ["fe1:  [FAILED]", "    error: no such file: /nonexistent/file"]


def test_jobs_show_of_a_running_job_says_who_runs_it(lab: Lab) -> None:
    started = saline(lab, "run", "be2", "test.sleep", "5", "-t", "30", "--async")
    jid = started.stdout.strip()
    shown = wait_for(
        lambda: (p := saline(lab, "jobs", "show", jid)) and "RUNNING" in p.stdout and p,
        4,
        "the job shown running",
    )
    assert shown.stdout.splitlines()[2:] == ["be2:", "    RUNNING"]
    assert "1 targeted, 0 succeeded, 0 failed, 1 running, 0 not reached" in shown.stderr
    assert saline(lab, "jobs", "wait", jid).returncode == 0
    shown = saline(lab, "jobs", "show", jid)
    assert shown.stdout.splitlines()[2:] == ["be2:", "    True"]


# -- jobs list filters ---------------------------------------------------------------------


def _listed(lab: Lab, *args: str) -> list[dict[str, Any]]:
    proc = saline(lab, "jobs", "list", "--out", "json", *args)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def test_jobs_list_filters_on_the_master(lab: Lab, tmp_path: Path) -> None:
    _write(lab, "listed", f"{tmp_path / 'listed'}:\n  file.managed:\n    - contents: x\n")
    dry = _jid(saline(lab, "state", "apply", "fe2", "listed", "--test").stderr)
    real = _jid(saline(lab, "state", "apply", "fe2", "listed").stderr)
    _, echo = run_json(lab, "-T", "list", "be2,fe2", "test.echo", "x")
    for _ in range(3):  # newer jobs that match none of the filters below
        run_json(lab, "be1", "test.ping")

    assert [r["jid"] for r in _listed(lab, "-n", "1", "--fun", "state.apply", "--test")] == [dry]
    assert [r["jid"] for r in _listed(lab, "-n", "1", "--fun", "state.*", "--no-test")] == [real]
    assert [r["jid"] for r in _listed(lab, "-n", "1", "--fun", "test.e*")] == [echo["jid"]]
    assert [r["jid"] for r in _listed(lab, "-n", "2", "--target", "fe2")] == [real, dry]
    assert [r["jid"] for r in _listed(lab, "-n", "1", "--target", "*,fe2")] == [echo["jid"]]
    rows = _listed(lab, "-n", "1000", "--test")
    assert dry in [r["jid"] for r in rows] and real not in [r["jid"] for r in rows]
    user = _listed(lab, "-n", "1")[0]["user"]
    assert len(_listed(lab, "-n", "3", "--user", user)) == 3
    assert _listed(lab, "--user", "no-such-user") == []
    assert _listed(lab, "--fun", "State.*") == []  # globs are case-sensitive
    human = saline(lab, "jobs", "list", "-n", "1", "--fun", "state.apply", "--test").stdout
    assert human.splitlines()[0].startswith("JID") and dry in human.splitlines()[1]


# -- events -------------------------------------------------------------------------------


def test_event_lines_start_with_the_seq_that_since_takes(lab: Lab) -> None:
    fired = saline(lab, "fire", "cli/output/test", "--data", '{"n": 7}')
    match = re.fullmatch(r"fired cli/output/test \(seq (\d+)\)\n", fired.stdout)
    assert match, fired.stdout + fired.stderr
    seq = int(match.group(1))
    args = ("events", "--tag", "cli/output/*", "--no-follow")
    [line] = saline(lab, *args, "--since", str(seq - 1)).stdout.splitlines()
    assert re.fullmatch(
        rf"#{seq} \d\d:\d\d:\d\d\.\d\d\d cli/output/test master \{{\"n\": 7\}}", line
    )
    assert saline(lab, *args, "--since", str(seq)).stdout == ""  # the number --since takes
    forced = saline(lab, *args, "--since", str(seq - 1), "--force-color").stdout
    assert f"{YELLOW}#{seq}" in forced


# -- errors as one line ---------------------------------------------------------------------


def test_state_file_errors_print_as_one_readable_line(lab: Lab) -> None:
    _write(lab, "quoted", "a:\n  cmd.run:\n    - name: \"echo 'hi' > /tmp/x\"\n")
    _write(lab, "syntax", "a:\n  cmd.run:\n\n    - name: {{ foo( }}\n")
    _write(lab, "badyaml", "a:\n  cmd.run:\n  - name: x\n   bad: [\n")
    expected = {
        "quoted": "error: quoted.yaml:2: a: cmd.run: \"echo 'hi' > /tmp/x\" uses shell syntax"
        " (`>`) but runs without a shell: add `shell: true` (or `python_shell: true`),"
        " or split the arguments",
        "syntax": "error: syntax.yaml:4: template syntax error: unexpected '}', expected ')'",
        "badyaml": "error: badyaml.yaml:4: invalid YAML:",
    }
    for name, line in expected.items():
        for args in (("state", "apply", "be1", name), ("run", "be1", "state.apply", name)):
            proc = saline(lab, *args)
            assert proc.returncode == 11
            header, error = proc.stdout.splitlines()
            assert re.fullmatch(r"be1:  \[FAILED\]  \(\d+ ms\)", header)
            assert error.startswith("    " + line), error
        shown = saline(lab, "state", "show", "be1", name).stdout.splitlines()
        assert shown[1].startswith("    " + line), shown


def test_an_undefined_name_in_a_state_file_is_one_line_naming_the_file(lab: Lab) -> None:
    _write(lab, "undefined", "a:\n  cmd.run:\n    - name: {{ pillar.nope }}\n")
    proc = saline(lab, "state", "apply", "be1", "undefined")
    [_, error] = proc.stdout.splitlines()
    assert error.startswith("    error: undefined.yaml:3: undefined in template")
    assert "'dict object' has no attribute 'nope'" in error
