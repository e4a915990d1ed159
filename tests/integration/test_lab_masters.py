"""``saline lab up --masters 3``: real PostgreSQL, a real etcd cluster, three masters, two
minions; faults on one master; ``lab down`` leaving no process behind."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from saline.lab.lab import Lab
from saline.lab.masters import process_state
from saline.lab.processes import alive
from tests.support import process_gone, wait_for

MINIONS = ["be1", "fe1"]


def cli(
    *args: str, config: Path | None = None, timeout: float = 90.0
) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ)
    if config is not None:
        env["SALINE_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "saline.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


class MastersLabRun:
    def __init__(self, directory: Path, seconds: float) -> None:
        self.directory = directory
        self.seconds = seconds

    def lab(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return cli("lab", *args, "--dir", str(self.directory))

    def status(self) -> dict[str, Any]:
        proc = self.lab("status", "--out", "json")
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    def masters(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.status()["masters"]}

    def leaders(self) -> list[str]:
        return [name for name, m in self.masters().items() if m["leader"]]

    def one_leader(self, timeout: float = 10.0, other_than: str | None = None) -> str:
        def found() -> str | None:
            leaders = self.leaders()
            if len(leaders) == 1 and leaders[0] != other_than:
                return leaders[0]
            return None

        leader = wait_for(found, timeout, f"exactly one leader (not {other_than})")
        assert leader is not None
        return leader

    def fault(self, kind: str, master: str) -> str:
        proc = self.lab("fault", kind, master)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / "lab.json").read_text())
        return data


@pytest.fixture(scope="module")
def masters_lab() -> Iterator[MastersLabRun]:
    # not under pytest's tmp dir (0700): the postgres user must reach the lab's store-pg
    base = Path(tempfile.mkdtemp(prefix="saline-masters-"))
    base.chmod(0o711)
    directory = base / "lab"
    started = time.monotonic()
    proc = cli("lab", "up", "--masters", "3", "--minions", "2", "--dir", str(directory))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = MastersLabRun(directory, seconds)
    try:
        yield run
    finally:
        cli("lab", "down", "--dir", str(directory))
        shutil.rmtree(base, ignore_errors=True)


def _refused(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _etcd_health(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/health", timeout=1) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except OSError:
        return False


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def test_three_masters_run_and_each_config_works_with_the_cli(masters_lab: MastersLabRun) -> None:
    print(f"lab up --masters 3 --minions 2: {masters_lab.seconds:.1f}s")
    report = masters_lab.status()
    masters = report["masters"]
    assert [m["name"] for m in masters] == ["m1", "m2", "m3"]
    assert len({m["port"] for m in masters}) == 3
    for m in masters:
        assert m["running"] and alive(m["pid"], m["config"])
        assert Path(m["config"]).is_absolute()
        assert Path(m["config"]) == masters_lab.directory / "masters" / m["name"] / "master.yaml"
        proc = cli("-c", m["config"], "status", "--out", "json")
        assert proc.returncode == 0, proc.stderr
        assert sorted(json.loads(proc.stdout)["online"]) == MINIONS
    assert {m: i["online"] for m, i in report["minions"].items()} == dict.fromkeys(MINIONS, True)
    assert report["store"]["running"] and all(e["running"] for e in report["leader_etcd"].values())
    # DIR/master.yaml, the CLI's default, is m1's
    default = masters_lab.directory / "master.yaml"
    assert default.read_text() == Path(masters[0]["config"]).read_text()
    proc = cli("run", "*", "test.ping", "--out", "json", config=default)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(json.loads(proc.stdout)["returns"]) == MINIONS
    human = masters_lab.lab("status")
    assert human.returncode == 0 and all(f"  m{i} " in human.stdout for i in (1, 2, 3))


def test_the_store_is_real_postgresql_behind_a_private_dsn_file(
    masters_lab: MastersLabRun,
) -> None:
    dsn_file = masters_lab.directory / "store.dsn"
    assert dsn_file.stat().st_mode & 0o777 == 0o600
    dsn = dsn_file.read_text().strip()
    assert dsn.startswith("postgresql://")
    assert dsn not in (masters_lab.directory / "lab.json").read_text()
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("saline",)
    finally:
        conn.close()
    assert (masters_lab.directory / "store-pg" / "data" / "PG_VERSION").exists()


def test_every_master_holds_the_same_key_and_accepts_every_minion(
    masters_lab: MastersLabRun,
) -> None:
    pkis = [masters_lab.directory / "masters" / m / "pki" for m in ("m1", "m2", "m3")]
    assert len({(p / "master.pub").read_text() for p in pkis}) == 1
    assert len({(p / "master.key").read_text() for p in pkis}) == 1
    for pki in pkis:
        assert (pki / "master.key").stat().st_mode & 0o777 == 0o600
        assert sorted(os.listdir(pki / "minions")) == MINIONS


def test_exactly_one_master_leads(masters_lab: MastersLabRun) -> None:
    masters_lab.one_leader()


def test_pause_and_resume_change_the_process_state(masters_lab: MastersLabRun) -> None:
    leader = masters_lab.one_leader()
    follower = next(m for m in ("m1", "m2", "m3") if m != leader)
    pid = masters_lab.masters()[follower]["pid"]
    assert "paused" in masters_lab.fault("master-pause", follower)
    try:
        assert process_state(pid) == "T"
        assert masters_lab.masters()[follower]["paused"] is True
    finally:
        assert "resumed" in masters_lab.fault("master-resume", follower)
    assert process_state(pid) in ("R", "S")
    proc = cli("-c", masters_lab.masters()[follower]["config"], "status", "--out", "json")
    assert proc.returncode == 0, proc.stderr


def test_etcd_partition_refuses_connections_and_heal_restores(
    masters_lab: MastersLabRun,
) -> None:
    leader = masters_lab.one_leader()
    follower = next(m for m in ("m3", "m2", "m1") if m != leader)
    endpoints = masters_lab.masters()[follower]["etcd_proxy"]["endpoints"]
    assert all(_etcd_health(e) for e in endpoints)  # the proxy reaches the real members
    masters_lab.fault("etcd-partition", follower)
    try:
        assert all(_refused(e) for e in endpoints)
        assert masters_lab.masters()[follower]["etcd_proxy"]["cut"] is True
        # the other masters' proxies are untouched
        other = masters_lab.masters()[leader]["etcd_proxy"]["endpoints"]
        assert all(_etcd_health(e) for e in other)
    finally:
        masters_lab.fault("etcd-heal", follower)
    assert all(_etcd_health(e) for e in endpoints)
    assert masters_lab.masters()[follower]["etcd_proxy"]["cut"] is False


def test_partitioned_leader_is_replaced_then_rejoins(masters_lab: MastersLabRun) -> None:
    leader = masters_lab.one_leader()
    masters_lab.fault("etcd-partition", leader)
    try:
        masters_lab.one_leader(timeout=10, other_than=leader)
    finally:
        masters_lab.fault("etcd-heal", leader)
    # healed, the old leader follows: still exactly one leads
    masters_lab.one_leader(timeout=10)


def test_killing_the_leader_elects_another_within_10s(masters_lab: MastersLabRun) -> None:
    leader = masters_lab.one_leader()
    pid = masters_lab.masters()[leader]["pid"]
    assert "killed" in masters_lab.fault("master-kill", leader)
    wait_for(lambda: process_gone(pid), 5, f"pid {pid} gone")
    assert masters_lab.masters()[leader]["running"] is False
    masters_lab.one_leader(timeout=10, other_than=leader)
    # started again, it rejoins as a follower
    masters_lab.fault("master-start", leader)
    wait_for(
        lambda: (
            masters_lab.masters()[leader]["running"]
            and cli("-c", masters_lab.masters()[leader]["config"], "status").returncode == 0
        ),
        20,
        f"{leader} answering again",
    )
    masters_lab.one_leader(timeout=10)


def test_down_leaves_no_process_behind(masters_lab: MastersLabRun) -> None:
    state = masters_lab.state()
    pids = {
        **{name: m["pid"] for name, m in state["masters"].items()},
        **{name: m["pid"] for name, m in state["minions"].items()},
        **{name: s["pid"] for name, s in state["services"].items()},
    }
    postmaster = masters_lab.status()["store"]["pid"]
    assert postmaster is not None
    pids["postgresql"] = postmaster
    pids.update({f"postgresql child {c}": c for c in _children(postmaster)})
    assert len(pids) >= 3 + 2 + 6 + 1
    proc = masters_lab.lab("down")
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: all(process_gone(pid) for pid in pids.values()),
        15,
        "every lab process gone: " + ", ".join(n for n, p in pids.items() if not process_gone(p)),
    )
    report = masters_lab.status()
    assert not any(m["running"] for m in report["masters"])
    assert not report["store"]["running"]
    assert Lab(masters_lab.directory).load().running() == dict.fromkeys(
        Lab(masters_lab.directory).load().processes(), False
    )
