"""The lab's record of its nodes and services: ``DIR/chefha.json``, read and written under a lock.

Every process that changes a service (``lab up``, a shim run by a minion job, ``lab fault``)
updates the record under an exclusive ``flock`` so concurrent shims on different nodes never
lose each other's pids.
"""

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saline.errors import SalineError

STATE_NAME = "chefha.json"
BACKENDS = ("be1", "be2", "be3")
FRONTENDS = ("fe1", "fe2")


class ChefLabError(SalineError):
    """The Chef HA lab is missing, or a lab operation failed (the message says which)."""


def state_path(directory: Path) -> Path:
    return directory / STATE_NAME


def load(directory: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(state_path(directory).read_text())
    except FileNotFoundError as e:
        raise ChefLabError(
            f"no Chef HA lab in {directory} (run `saline lab up --chef-ha --dir ...`)"
        ) from e
    return data


def save(directory: Path, data: dict[str, Any]) -> None:
    path = state_path(directory)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.chmod(0o600)  # it holds the lab's database passwords
    tmp.replace(path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[dict[str, Any]]:
    """Load the record under an exclusive lock; whatever the block changed is saved."""
    lock_path = directory / ".chefha.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = load(directory)
            yield data
            save(directory, data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def node(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The node called ``name`` (a minion id) or the node whose address is ``name``."""
    nodes: dict[str, dict[str, Any]] = data["nodes"]
    if name in nodes:
        return nodes[name]
    for candidate in nodes.values():
        if candidate["address"] == name:
            return candidate
    raise ChefLabError(f"no lab node {name!r} (nodes: {', '.join(nodes)})")
