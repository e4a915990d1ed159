"""The lab itself: status, down stopping exactly what it started, and a second up refused."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from saline.lab.lab import Lab, LabError, lab_ids
from saline.lab.processes import alive
from tests.support import saline, wait_for


def test_lab_ids_are_stable_and_readable() -> None:
    assert lab_ids(5) == ["be1", "be2", "be3", "fe1", "fe2"]
    assert lab_ids(1) == ["be1"]


def test_status_up_twice_and_down_stops_only_its_own(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab")
    (lab.directory / "states").mkdir(parents=True)
    (lab.directory / "states" / "mine.yaml").write_text("kept: {test.nop: []}\n")
    lab.up(3)
    assert (lab.directory / "states" / "mine.yaml").read_text() == "kept: {test.nop: []}\n"
    assert (lab.directory / "pillar").is_dir() and (lab.directory / "reactors").is_dir()
    decoy = subprocess.Popen(["sleep", "300"])
    real_fe1 = lab.state["minions"]["fe1"]["pid"]
    try:
        proc = saline(lab, "lab", "status", "--dir", str(lab.directory), "--out", "json")
        report = json.loads(proc.stdout)
        assert report["master"]["running"] is True
        assert {m: (i["online"], i["role"]) for m, i in report["minions"].items()} == {
            "be1": (True, "backend"),
            "be2": (True, "backend"),
            "fe1": (True, "frontend"),
        }
        with pytest.raises(LabError, match="already running"):
            Lab(lab.directory).up(3)

        # pretend fe1's pid was reused by an unrelated process: down must not touch it
        lab.state["minions"]["fe1"]["pid"] = decoy.pid
        lab.save()
        proc = saline(lab, "lab", "down", "--dir", str(lab.directory))
        assert proc.returncode == 0, proc.stderr
        assert decoy.poll() is None, "a process the lab did not start survives `lab down`"
        for info in lab.load().processes().values():
            if info["pid"] != decoy.pid:
                wait_for(lambda i=info: not alive(i["pid"], i["marker"]), 10, "stopped")
        assert alive(real_fe1, lab.state["minions"]["fe1"]["marker"])
    finally:
        decoy.kill()
        decoy.wait()
        if alive(real_fe1, "minion.yaml"):  # the minion the test hid from `down`
            os.kill(real_fe1, signal.SIGTERM)


def test_down_never_signals_a_stale_service_pidfile(tmp_path: Path) -> None:
    """A supervised service's pidfile left behind names a pid now used by another program:
    `lab down` stops the real services and leaves that program alone."""
    lab = Lab(tmp_path / "lab")
    lab.up(1)
    decoy = subprocess.Popen(["sleep", "301"])
    try:
        proc = saline(lab, "run", "be1", "service.start", "demo")
        assert proc.returncode == 0, proc.stderr
        pidfile = lab.directory / "minions" / "be1" / "cache" / "services" / "demo.pid"
        real = int(pidfile.read_text().split()[0])
        assert alive(real, "sleep infinity")
        stale = pidfile.with_name("old.pid")  # a service no longer configured
        stale.write_text(f"{decoy.pid}\n")
        reused = pidfile.with_name("reused.pid")
        reused.write_text(f"{decoy.pid}\n")
        lab.down()
        assert decoy.poll() is None, "lab down signalled a pid it could not prove was its own"
        wait_for(lambda: not alive(real, "sleep infinity"), 10, "the real service stopped")
    finally:
        decoy.kill()
        decoy.wait()
