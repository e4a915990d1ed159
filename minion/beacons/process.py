"""The ``process`` beacon: whether processes with given names run.

Params:
  ``names``: process names, matched exactly against ``/proc/PID/comm`` (the kernel keeps
  the first 15 characters of the executable's name; longer names are compared truncated).
  ``cmdline_contains``: optional text the command line must also contain.

States (one observation per name, keyed by the name):
  ``present`` (ok), ``absent`` (bad). Zombies do not count.

Data: ``name``, ``pids`` (sorted).

Example::

    beacons:
      process: {names: [beam.smp], cmdline_contains: rabbitmq, interval: 15}
"""

import os

from pydantic import Field

from minion.beacons.base import Beacon, BeaconConfig, Observation

#: longest process name the kernel keeps in comm
COMM_LEN = 15


class ProcessConfig(BeaconConfig):
    #: process names (comm) to look for
    names: list[str] = Field(min_length=1)
    #: when set, a process counts only if its command line contains this text
    cmdline_contains: str | None = Field(default=None, min_length=1)


def _comm_and_state(pid: str) -> tuple[str, str] | None:
    """(comm, state) from /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm sits between the first "(" and the last ")" and may contain either.
    comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
    rest = raw[raw.rfind(b")") + 2 :].split()
    return comm, rest[0].decode() if rest else "?"


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class ProcessBeacon(Beacon):
    """Watch for running processes by name."""

    name = "process"
    bad_states = ("absent",)
    Config = ProcessConfig
    config: ProcessConfig

    def check(self) -> list[Observation]:
        pids: dict[str, list[int]] = {name: [] for name in self.config.names}
        needle = self.config.cmdline_contains
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            info = _comm_and_state(entry.name)
            if info is None or info[1] in ("Z", "X"):
                continue
            matches = [name for name in pids if name[:COMM_LEN] == info[0]]
            if not matches or (needle is not None and needle not in _cmdline(entry.name)):
                continue
            for name in matches:
                pids[name].append(int(entry.name))
        return [
            Observation(
                name,
                "present" if found else "absent",
                bad=not found,
                data={"name": name, "pids": sorted(found)},
            )
            for name, found in pids.items()
        ]
