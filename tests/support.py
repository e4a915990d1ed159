"""Shared helpers for integration tests: real processes, real sockets, deadlines not sleeps."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from saline.errors import ClientError
from saline.keys import fingerprint, load_or_create_keypair, read_keypair
from saline.lab.lab import Lab
from saline.lab.processes import saline_argv, spawn

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` seconds pass;
    returns its last value (falsy on timeout). The one polling loop of the tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Like ``poll``, but a timeout fails the test naming ``what``."""
    value = poll(predicate, timeout)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (absent, or a zombie an init that doesn't reap keeps)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return raw[raw.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def saline(lab: Lab, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``saline`` CLI against the lab's master."""
    env = {**os.environ, "SALINE_CONFIG": str(lab.master_config)}
    return subprocess.run(
        [sys.executable, "-m", "saline.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_json(lab: Lab, *args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """``saline run ... --out json``: (exit code, parsed document)."""
    proc = saline(lab, "run", *args, "--out", "json", timeout=timeout)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(
            f"not JSON (rc={proc.returncode}): {proc.stdout!r} {proc.stderr!r}"
        ) from e


def status(lab: Lab) -> dict[str, Any]:
    with lab.client() as master:
        return master.request("status")


def online(lab: Lab) -> set[str]:
    """Minions the master sees online; empty while the master is (re)starting."""
    try:
        return set(status(lab)["online"])
    except ClientError:
        return set()


def events(lab: Lab, tag: str = "*", since: int = 0) -> list[dict[str, Any]]:
    """Stored events after seq ``since`` (replayed from the store), matching ``tag``."""
    proc = saline(
        lab, "events", "--tag", tag, "--since", str(since), "--no-follow", "--out", "json"
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def add_minion(lab: Lab, minion_id: str, **overrides: Any) -> tuple[int, Path]:
    """Start an extra minion with a fresh key that the master does NOT know yet.

    :returns: (pid, minion directory)
    """
    master_pub = read_keypair(lab.directory / "master" / "pki", "master").public
    mdir = lab.directory / "extra" / minion_id
    pki = mdir / "pki"
    load_or_create_keypair(pki, "minion")
    cfg: dict[str, Any] = {
        "id": minion_id,
        "master": "127.0.0.1",
        "master_port": lab.state["port"],
        "master_pub": master_pub,
        "master_finger": fingerprint(master_pub),
        "pki_dir": str(pki),
        "cachedir": str(mdir / "cache"),
        "log_file": str(mdir / "minion.log"),
        "heartbeat_interval": 0.5,
        "acceptance_wait": 0.3,
        "return_retry": 1.0,
        "service_provider": "supervisor",
        "grains": {"role": "extra"},
    }
    cfg.update(overrides)
    path = mdir / "minion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pid = spawn(saline_argv(path, "minion"), mdir / "minion.out")
    return pid, mdir


def master_pid(lab: Lab) -> int:
    return int(lab.state["master"]["pid"])


def minion_pid(lab: Lab, minion_id: str) -> int:
    return int(lab.state["minions"][minion_id]["pid"])


def restart_master(lab: Lab, **overrides: Any) -> None:
    """Stop the lab's master, apply config overrides, start it again, wait for the minions."""
    from saline.lab.processes import alive

    info = lab.state["master"]
    os.kill(int(info["pid"]), 15)
    wait_for(lambda: not alive(int(info["pid"]), info["marker"]), 15, "master stopped")
    config = yaml.safe_load(lab.master_config.read_text())
    config.update({k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()})
    lab.master_config.write_text(yaml.safe_dump(config))
    lab.start_master()
    wait_for(lambda: online(lab) >= set(lab.state["minions"]), 20, "minions back online")


def key_list(lab: Lab) -> dict[str, list[str]]:
    proc = saline(lab, "key", "list", "--out", "json")
    assert proc.returncode == 0, proc.stderr
    keys: dict[str, list[str]] = json.loads(proc.stdout)
    return keys


def as_user(uid: int, gid: int, action: Callable[[], Any]) -> Any:
    """Run ``action`` in a forked child with another uid (no exec: the code is in memory)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result: Any = {"ok": action()}
        except Exception as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(write_fd, json.dumps(result, default=repr).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)
