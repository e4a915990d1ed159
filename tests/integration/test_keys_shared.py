"""Minion keys shared through the store by three masters (real PostgreSQL, etcd, masters and
minions): a key deleted on one master disappears on the others; a key accepted on one is
accepted on all, and the minion is served by every master."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.masters import MastersLab
from saline.lab.processes import saline_argv, spawn
from tests.support import process_gone, wait_for


@pytest.fixture(scope="module")
def lab() -> Iterator[MastersLab]:
    base = Path(tempfile.mkdtemp(prefix="saline-keys-shared-"))
    base.chmod(0o711)  # the postgres user must reach the store's data directory
    lab = MastersLab(base / "lab")
    lab.up(2, masters=3, timeout=90)
    try:
        yield lab
    finally:
        lab.down()
        shutil.rmtree(base, ignore_errors=True)


def key(lab: MastersLab, master: str, *args: str) -> str:
    env = {**os.environ, "SALINE_CONFIG": lab.state["masters"][master]["config"]}
    done = subprocess.run(
        [sys.executable, "-m", "saline.cli.main", "key", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def keys(lab: MastersLab, master: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = json.loads(key(lab, master, "list", "--out", "json"))
    return table


def state_of(lab: MastersLab, master: str, minion_id: str) -> str | None:
    found = [state for state, ids in keys(lab, master).items() if minion_id in ids]
    return found[0] if len(found) == 1 else None


def online(lab: MastersLab, master: str, minion_id: str) -> bool:
    reply = lab.ask(master) or {}
    return minion_id in reply.get("online", [])


def test_a_deleted_key_disappears_and_an_accepted_key_is_served_everywhere(
    lab: MastersLab,
) -> None:
    masters = list(lab.state["masters"])
    minion_id, info = sorted(lab.state["minions"].items())[0]
    for name in masters:
        assert state_of(lab, name, minion_id) == "accepted"
    os.kill(info["pid"], signal.SIGTERM)  # the minion stops, then its key is deleted
    wait_for(lambda: process_gone(info["pid"]), 30, "the minion stopped")
    key(lab, "m2", "delete", minion_id)
    for name in masters:
        wait_for(lambda n=name: state_of(lab, n, minion_id) is None, 30, f"no key on {name}")

    # the minion starts again: its hello lands in pending; accepted on m1 only
    pid = spawn(
        saline_argv(Path(info["config"]), "minion"),
        lab.directory / "logs" / f"{minion_id}-again.out",
    )
    info["pid"], info["marker"] = pid, info["config"]
    lab.lab.save()  # lab down stops it
    for name in masters:
        wait_for(lambda n=name: state_of(lab, n, minion_id) == "pending", 60, f"pending on {name}")
    key(lab, "m1", "accept", minion_id)
    for name in masters:
        wait_for(lambda n=name: state_of(lab, n, minion_id) == "accepted", 30, f"accepted {name}")
    for name in masters:
        wait_for(lambda n=name: online(lab, n, minion_id), 60, f"{minion_id} served by {name}")
