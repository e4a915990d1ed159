"""Long jobs through the real CLI, master and minions: ``-t`` is how long the CLI waits,
not how long the function may run; ``timeout=`` and the minion's ``max_function_timeout``
are; ``--batch-wait`` spaces a batch's starts."""

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.lab import Lab
from tests.support import run_json, saline, wait_for


def test_the_cli_stops_waiting_and_the_job_goes_on(lab: Lab) -> None:
    started = time.monotonic()
    code, doc = run_json(lab, "be1", "test.sleep", "4", "-t", "1")
    assert time.monotonic() - started < 4, "the CLI waited for the function"
    assert code == 12  # as a timeout
    assert doc["running"] == ["be1"] and doc["timed_out"] == ["be1"] and doc["returns"] == {}
    jid = doc["jid"]
    with lab.client() as master:
        shown = master.request("job_show", jid=jid)
    assert shown["running"] == ["be1"] and shown["returns"] == {}
    proc = saline(lab, "jobs", "wait", jid, "--out", "json", "-t", "30")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the job went on, and succeeded
    assert json.loads(proc.stdout)["returns"]["be1"]["return"] is True


def test_the_human_output_says_still_running_or_timed_out_on_the_minion(lab: Lab) -> None:
    proc = saline(lab, "run", "fe1", "test.sleep", "3", "-t", "0.5")
    assert proc.returncode == 12
    assert "STILL RUNNING when this stopped waiting: `saline jobs wait " in proc.stdout
    assert "still running (the job goes on): fe1" in proc.stderr

    started = time.monotonic()
    proc = saline(lab, "run", "fe1", "test.sleep", "30", "timeout=1", "-t", "25")
    assert proc.returncode == 12
    assert time.monotonic() - started < 15, "the minion's limit, not the CLI's wait, ended it"
    assert "did not finish in 1s; killed" in proc.stdout  # its return, as it arrived
    assert "TIMED OUT on the minion" in proc.stdout and "STILL RUNNING" not in proc.stdout


def test_timeout_keyword_in_json_and_a_bad_one(lab: Lab) -> None:
    code, doc = run_json(lab, "fe2", "test.sleep", "30", "timeout=1", "-t", "25")
    assert code == 12 and doc["timed_out"] == ["fe2"] and doc["running"] == []
    assert doc["returns"]["fe2"]["retcode"] == 124
    assert doc["returns"]["fe2"]["return"]["error"] == "timeout"
    # cmd.run takes a timeout of its own: it gets the job's, and stops its command
    code, doc = run_json(lab, "fe2", "cmd.run", "sleep 0.2", "timeout=5")
    assert code == 0, doc
    proc = saline(lab, "run", "fe2", "test.sleep", "1", "timeout=soon")
    assert proc.returncode == 2 and "timeout= must be a number of seconds" in proc.stderr


@pytest.fixture
def capped_lab(tmp_path: Path) -> Iterator[Lab]:
    """One minion whose max_function_timeout is 1.5 s."""
    the_lab = Lab(tmp_path / "lab")
    the_lab.up(1, timeout=60, extra={"max_function_timeout": 1.5})
    yield the_lab
    the_lab.down()


def test_max_function_timeout_caps_what_a_job_asks(capped_lab: Lab) -> None:
    lab = capped_lab
    for asked in ([], ["timeout=100"]):
        started = time.monotonic()
        code, doc = run_json(lab, "be1", "test.sleep", "30", *asked, "-t", "25")
        assert code == 12 and time.monotonic() - started < 15
        assert (
            doc["returns"]["be1"]["return"]["message"]
            == "test.sleep did not finish in 1.5s; killed"
        )


def _starts(log: Path) -> list[float]:
    return sorted(float(line.split()[1]) for line in log.read_text().splitlines())


def test_batch_wait_spaces_the_starts_of_a_batch(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "starts"
    script = f'echo "$SALINE_MINION_ID $(date +%s.%N)" >> {log}'
    args = ["be1,be2,fe1", "-T", "list", "cmd.run", script, "shell=true", "--batch", "1"]
    code, doc = run_json(lab, *args, "--batch-wait", "1")
    assert code == 0 and set(doc["returns"]) == {"be1", "be2", "fe1"}, doc
    starts = _starts(log)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2 and all(gap >= 1.0 for gap in gaps), gaps
    # without it, the next starts as soon as one returns
    log.unlink()
    code, _ = run_json(lab, *args)
    starts = _starts(log)
    assert code == 0 and starts[-1] - starts[0] < 1.0


def test_batch_wait_needs_a_batch_and_async_still_works(lab: Lab) -> None:
    proc = saline(lab, "run", "*", "test.ping", "--batch-wait", "1")
    assert proc.returncode == 2 and "--batch-wait needs --batch" in proc.stderr
    proc = saline(
        lab, "run", "be2", "test.sleep", "1", "--async", "--batch", "1", "--batch-wait", "0.5"
    )
    assert proc.returncode == 0, proc.stderr
    jid = proc.stdout.strip()
    wait_for(lambda: saline(lab, "jobs", "wait", jid, "-t", "10").returncode == 0, 20, "the job")
