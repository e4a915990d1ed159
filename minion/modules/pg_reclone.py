"""Re-clone a PostgreSQL follower beside its old copy: nothing is wiped until the new one streams.

``chef-backend-ctl pgsql-follow --force-basebackup`` wipes the data directory first, so a base
backup that fails (the disk is full, the leader refuses, the network drops) leaves the node
with no copy at all. Here the backup is taken into ``DATA.saline-new`` while the old copy
keeps running; only a complete backup is swapped in (the old one moved to
``DATA.saline-old``), and only once the new copy streams from the leader is the old one
removed. A backup that fails leaves the old copy untouched and running; a new copy that
does not start or stream is swapped back out and the old copy started again.

Nothing here picks a leader or a data directory: the caller (``chef_backend.reclone``) does,
and passes how to stop and start the node's PostgreSQL and how to tell that it streams.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saline.errors import ExecutionError

NEW_SUFFIX = ".saline-new"
OLD_SUFFIX = ".saline-old"
PG_LIB = Path("/usr/lib/postgresql")

_CONNINFO = re.compile(r"^\s*primary_conninfo\s*=\s*'((?:[^']|'')*)'\s*(?:#.*)?$", re.M)


@dataclass(frozen=True)
class Node:
    """How to drive the follower's PostgreSQL: stop it, start it, ask whether it streams."""

    stop: Callable[[], None]
    start: Callable[[], None]
    #: None while it does not stream yet, else its WAL receiver's sender; raises
    #: ExecutionError while it does not answer
    streaming: Callable[[], str | None]


def primary_conninfo(data_dir: Path) -> dict[str, str]:
    """The follower's own ``primary_conninfo`` as keywords: the replication user and password
    it already uses. Read from ``recovery.conf`` (PostgreSQL before 12, as chef-backend's 9.5)
    and ``postgresql.auto.conf``; the last setting wins."""
    import psycopg2.extensions  # type: ignore[import-untyped]

    found: list[str] = []
    for name in ("recovery.conf", "postgresql.auto.conf"):
        try:
            found += _CONNINFO.findall((data_dir / name).read_text())
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ExecutionError(f"cannot read {data_dir / name}: {e.strerror}") from None
    if not found:
        raise ExecutionError(f"{data_dir} sets no primary_conninfo: not a follower's copy")
    try:
        return dict(psycopg2.extensions.parse_dsn(found[-1].replace("''", "'")))
    except psycopg2.ProgrammingError:
        raise ExecutionError(f"{data_dir}: primary_conninfo cannot be parsed") from None


def _pg_basebackup(data_dir: Path) -> str:
    """The pg_basebackup of the copy's major version (``PG_VERSION``), else from PATH."""
    try:
        major = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        raise ExecutionError(f"{data_dir} holds no PostgreSQL copy (no PG_VERSION)") from None
    versioned = PG_LIB / major / "bin" / "pg_basebackup"
    if versioned.exists():
        return str(versioned)
    found = shutil.which("pg_basebackup")
    if found is None:
        raise ExecutionError(f"pg_basebackup for PostgreSQL {major} not found")
    return found


def _as_owner(data_dir: Path, argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as the data directory's owner."""
    uid = data_dir.stat().st_uid
    if os.geteuid() != 0 or uid == 0:
        return argv
    return ["runuser", "-u", pwd.getpwuid(uid).pw_name, "--", *argv]


def last_line(text: str) -> str:
    """The last non-blank line of a program's output (where it says what went wrong)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def base_backup(data_dir: Path, new: Path, conninfo: dict[str, str], timeout: float) -> None:
    """A complete base backup of the leader into ``new``, with ``standby.signal`` and the
    conninfo written (``-R``); on failure ``new`` is removed and the error says why."""
    import psycopg2.extensions

    shutil.rmtree(new, ignore_errors=True)  # a previous attempt's leftovers
    new.mkdir(mode=0o700)
    stat = data_dir.stat()
    os.chown(new, stat.st_uid, stat.st_gid)
    argv = [
        _pg_basebackup(data_dir), "-D", str(new), "-d", psycopg2.extensions.make_dsn(**conninfo),
        "-c", "fast", "-R", "-X", "stream",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            _as_owner(data_dir, argv), capture_output=True, text=True, timeout=timeout, cwd="/"
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(new, ignore_errors=True)
        raise ExecutionError(f"the base backup took longer than {timeout:g}s") from None
    if proc.returncode != 0:  # pg_basebackup never prints the password
        shutil.rmtree(new, ignore_errors=True)
        raise ExecutionError(f"pg_basebackup failed: {last_line(proc.stderr)}")


def reclone(
    data_dir: Path,
    leader: tuple[str, int],
    node: Node,
    keep: Sequence[str] = (),
    backup_timeout: float = 3600.0,
    stream_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Re-clone the follower at ``data_dir`` from ``leader`` (host, port) beside its old copy.

    ``keep`` names files of the old copy that are the node's own (not the leader's) and are
    copied over the backup's before it starts. Returns what was done; raises
    :class:`ExecutionError` saying where it stopped and that the old copy is still there.
    """
    data_dir = data_dir.resolve()
    new = data_dir.with_name(data_dir.name + NEW_SUFFIX)
    old = data_dir.with_name(data_dir.name + OLD_SUFFIX)
    for name in keep:
        if not name or "/" in name or name in (".", ".."):
            raise ExecutionError(f"keep: {name!r} is not a file name of the data directory")
    conninfo = {**primary_conninfo(data_dir), "host": leader[0], "port": str(leader[1])}
    started = clock()
    try:
        base_backup(data_dir, new, conninfo, backup_timeout)
    except ExecutionError as e:
        raise ExecutionError(f"{e}; the old data directory {data_dir} is untouched") from None
    for name in keep:
        if (data_dir / name).is_file():
            shutil.copy2(data_dir / name, new / name)
            stat = (data_dir / name).stat()
            os.chown(new / name, stat.st_uid, stat.st_gid)
    backed_up = clock() - started

    node.stop()
    shutil.rmtree(old, ignore_errors=True)  # the copy a previous re-clone left, if any
    data_dir.rename(old)
    new.rename(data_dir)
    problem = _start_streaming(node, clock, sleep, stream_timeout)
    if problem is not None:
        _swap_back(data_dir, old, node)
        raise ExecutionError(
            f"the re-cloned copy {problem}; swapped back: the old data directory is in place "
            f"at {data_dir} again"
        )
    shutil.rmtree(old, ignore_errors=True)
    return {
        "data_dir": str(data_dir),
        "leader": f"{leader[0]}:{leader[1]}",
        "backup_seconds": round(backed_up, 2),
        "seconds": round(clock() - started, 2),
        "old_copy_removed": True,
    }


def _start_streaming(
    node: Node, clock: Callable[[], float], sleep: Callable[[float], None], timeout: float
) -> str | None:
    """Start the new copy and wait until it streams; None when it does, else what is wrong."""
    try:
        node.start()
    except ExecutionError as e:
        return f"did not start: {e}"
    deadline = clock() + timeout
    last = "its WAL receiver is not streaming"
    while clock() < deadline:
        try:
            if node.streaming() is not None:
                return None
        except ExecutionError as e:
            last = str(e)
        sleep(0.5)
    return f"did not stream within {timeout:g}s ({last})"


def _swap_back(data_dir: Path, old: Path, node: Node) -> None:
    """Put the old copy back where it was and start it; the failed new copy is removed."""
    with contextlib.suppress(ExecutionError):  # it may never have started: back in any case
        node.stop()
    failed = data_dir.with_name(data_dir.name + ".saline-failed")
    shutil.rmtree(failed, ignore_errors=True)
    data_dir.rename(failed)
    old.rename(data_dir)
    shutil.rmtree(failed, ignore_errors=True)
    node.start()
