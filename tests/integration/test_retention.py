"""Retention on a real lab master: with ``keep_events: 1s`` its events are pruned in the
background while it goes on storing events and running jobs."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.lab import Lab
from tests.integration.test_metrics import scrape, value
from tests.support import events, run_json, saline, status, wait_for


@pytest.fixture
def short_memory_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    lab.up(1, timeout=60, extra_master={"keep_events": "1s"})
    yield lab
    lab.down()


def _fire(lab: Lab, tag: str) -> int:
    proc = saline(lab, "fire", tag, "--data", '{"n": 1}')
    match = re.fullmatch(rf"fired {re.escape(tag)} \(seq (\d+)\)\n", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return int(match.group(1))  # the seq: stored when fire answered


def _stored(lab: Lab, seq: int) -> bool:
    return any(e["seq"] == seq for e in events(lab, "test/retention/*", since=seq - 1))


def test_old_events_disappear_while_the_master_keeps_serving(short_memory_lab: Lab) -> None:
    lab = short_memory_lab
    first = _fire(lab, "test/retention/one")
    wait_for(lambda: not _stored(lab, first), timeout=30, what="the first event pruned")

    # the master still stores events and runs jobs, and its retention task never failed
    second = _fire(lab, "test/retention/two")
    assert second > first
    code, doc = run_json(lab, "be1", "test.ping")
    assert code == 0 and doc["returns"]["be1"]["success"], doc
    wait_for(lambda: not _stored(lab, second), timeout=30, what="the second event pruned")
    assert status(lab)["tasks"]["retention"]["restarts"] == 0

    log = (lab.directory / "logs" / "master.log").read_text()
    assert re.search(r"retention: pruned \d+ events", log), log[-2000:]
    stats = saline(lab, "store", "stats", "--out", "json")
    assert stats.returncode == 0, stats.stderr
    doc = json.loads(stats.stdout)
    assert doc["tables"]["jobs"]["rows"] >= 1  # jobs are kept 7 days by default
    assert doc["tables"]["events"]["rows"] < second  # events are not

    # its counters: in status (JSON and the human line) and on the metrics endpoint
    retention = status(lab)["retention"]
    assert retention["keep"]["events"] == 1.0 and retention["passes"] >= 1
    assert retention["deleted"]["events"] >= 2 and retention["last_pass"] is not None
    human = saline(lab, "status").stdout
    assert re.search(
        r"retention: last pass [\d:]+ \([\d.e-]+s\), deleted since start: \d+ events", human
    ), human
    samples = scrape(lab)
    assert value(samples, "saline_retention_deleted_total", kind="events") >= 2
    assert value(samples, "saline_retention_passes_total") >= 1
    assert value(samples, "saline_retention_last_pass_timestamp_seconds") > 0
