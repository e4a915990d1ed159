"""preflight.*: read-only facts the Chef HA states plan with, before they touch the node.

``check`` compares this node with the reference's hardware requirements for its role
(cores, memory, free disk, no network file system under the backend's data, a
synchronized clock) and returns one verdict per check; the ``chef.preflight`` state turns
each verdict into a chunk, so a refusal names what is short. ``existing`` tells the states
which files are there, so that permission-only states never create a secret file.

Nothing here changes the node. Facts are read by small functions and judged by the pure
:func:`evaluate`, which the tests drive with made-up facts.
"""

import ctypes
import ctypes.util
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from minion.modules.base import Context
from saline.errors import ExecutionError

#: decimal units: a machine sold with "8 GB" reports about 8.2e9 bytes of MemTotal, while
#: 8 GiB would refuse it
GB = 1_000_000_000
MB = 1_000_000

#: file system types that are, or may be, backed by the network (``fuse.*`` covers sshfs,
#: s3fs, gcsfuse...: a FUSE file system cannot be told local from remote, so it is refused)
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smbfs",
        "smb3",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.ceph",
    }
)

#: the reference: backend members must agree within 1.5 s, so each clock may be at most
#: half of that off true time
MAX_CLOCK_ERROR_S = 0.75

#: ``adjtimex`` returns this when the kernel clock is not synchronized
_TIME_ERROR = 5
#: the status bit saying the same
_STA_UNSYNC = 0x40
#: ``struct timex`` head (modes, offset, freq, maxerror, esterror, status) in native layout
_TIMEX_HEAD = "@Illlli"


@dataclass(frozen=True)
class Requirement:
    """Minimums for one role (defaults from the reference, each overridable by pillar)."""

    cores: int
    memory_gb: float
    disk_gb: float
    #: extra disk per node the Chef server manages ("allocate 2 MB per node")
    disk_mb_per_node: float = 0
    #: refuse a network file system under the data directory
    local_storage: bool = False
    #: refuse an unsynchronized clock or one off by more than MAX_CLOCK_ERROR_S
    clock: bool = False


REQUIREMENTS: dict[str, Requirement] = {
    "frontend": Requirement(cores=4, memory_gb=4, disk_gb=20),
    "backend": Requirement(
        cores=2, memory_gb=8, disk_gb=50, disk_mb_per_node=2, local_storage=True, clock=True
    ),
}

_NUMBERS = ("cores", "memory_gb", "disk_gb", "disk_mb_per_node")
_SWITCHES = ("local_storage", "clock")


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


@dataclass(frozen=True)
class Clock:
    synchronized: bool
    #: the kernel's maximum error estimate, in seconds
    max_error_s: float


@dataclass(frozen=True)
class Facts:
    """What :func:`evaluate` judges; read by :func:`read_facts`."""

    cores: int
    memory_bytes: int
    #: the data directory, or its nearest existing parent (where free space is measured)
    disk_path: str
    disk_free_bytes: int
    #: the mount holding ``disk_path``; None when /proc/self/mounts cannot be read
    mount: Mount | None
    #: None when the kernel clock cannot be read
    clock: Clock | None


@dataclass(frozen=True)
class Verdict:
    #: "cores", "memory", "disk", "storage" or "clock"
    name: str
    ok: bool
    #: says what was found and what is required, e.g. "memory 3.8 GB < 8 GB required ..."
    message: str


# -- reading facts -------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """Mount points in /proc/self/mounts escape space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """Mounts from the text of /proc/self/mounts (device, point, type, ...), in order."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(point=_unescape(fields[1]), fstype=fields[2]))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mount point containing it (the last mounted
    wins a tie, as it hides the ones below it)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = point == "/" or path == point or path.startswith(point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def _existing_parent(path: str) -> str:
    """``path`` if it exists, else its nearest existing parent (the data directory of a
    node not installed yet lives on the file system of that parent)."""
    current = os.path.realpath(path)
    while not os.path.exists(current):
        current = os.path.dirname(current)
    return current


def _memory_bytes(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo, encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ExecutionError(f"no MemTotal in {meminfo}")


def _cores() -> int:
    # CPUs this process may run on (cgroup cpusets included), not all the host has.
    return len(os.sched_getaffinity(0))


def _clock() -> Clock | None:
    """The kernel's NTP state through ``adjtimex`` (modes 0: read only), no timedatectl."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(512)  # larger than struct timex on any ABI
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    _modes, _offset, _freq, maxerror, _esterror, status = struct.unpack_from(_TIMEX_HEAD, buf.raw)
    synchronized = state != _TIME_ERROR and not status & _STA_UNSYNC
    return Clock(synchronized=synchronized, max_error_s=maxerror / 1e6)


def read_facts(data_dir: str, mounts_file: str = "/proc/self/mounts") -> Facts:
    """Read this node's facts; ``data_dir`` need not exist yet."""
    disk_path = _existing_parent(data_dir)
    vfs = os.statvfs(disk_path)
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as fh:
            mount = mount_of(disk_path, parse_mounts(fh.read()))
    except OSError:
        mount = None
    return Facts(
        cores=_cores(),
        memory_bytes=_memory_bytes(),
        disk_path=disk_path,
        # f_bavail: what an unprivileged service may use, not the root reserve
        disk_free_bytes=vfs.f_bavail * vfs.f_frsize,
        mount=mount,
        clock=_clock(),
    )


# -- judging -------------------------------------------------------------------------------


def requirement_for(role: str, overrides: Mapping[str, Any] | None = None) -> Requirement:
    """The role's requirement with pillar ``chef_ha:preflight`` overrides applied.

    :raises ExecutionError: unknown role, unknown key, or a value of the wrong type.
    """
    base = REQUIREMENTS.get(role)
    if base is None:
        known = ", ".join(sorted(REQUIREMENTS))
        raise ExecutionError(f"unknown Chef HA role {role!r} (expected one of {known})")
    changes: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ExecutionError(f"preflight {key} must be a number >= 0, got {value!r}")
            changes[key] = int(value) if key == "cores" else float(value)
        elif key in _SWITCHES:
            if not isinstance(value, bool):
                raise ExecutionError(f"preflight {key} must be true or false, got {value!r}")
            changes[key] = value
        else:
            known = ", ".join((*_NUMBERS, *_SWITCHES))
            raise ExecutionError(f"unknown preflight setting {key!r} (known: {known})")
    return replace(base, **changes)


def _num(value: float) -> str:
    return f"{value:g}"


def evaluate(role: str, facts: Facts, need: Requirement, managed_nodes: int = 0) -> list[Verdict]:
    """One verdict per check that applies to ``need``; pure."""
    a = f"a {role}"
    verdicts = [
        Verdict(
            "cores",
            facts.cores >= need.cores,
            f"cores {facts.cores} {'>=' if facts.cores >= need.cores else '<'} "
            f"{need.cores} required for {a}",
        ),
    ]
    memory = facts.memory_bytes / GB
    ok = facts.memory_bytes >= need.memory_gb * GB
    verdicts.append(
        Verdict(
            "memory",
            ok,
            f"memory {memory:.1f} GB {'>=' if ok else '<'} {_num(need.memory_gb)} GB "
            f"required for {a}",
        )
    )
    disk_bytes = need.disk_gb * GB + need.disk_mb_per_node * MB * managed_nodes
    extra = ""
    if need.disk_mb_per_node and managed_nodes:
        extra = (
            f" ({_num(need.disk_gb)} GB + {_num(need.disk_mb_per_node)} MB x "
            f"{managed_nodes} managed nodes)"
        )
    ok = facts.disk_free_bytes >= disk_bytes
    verdicts.append(
        Verdict(
            "disk",
            ok,
            f"disk {facts.disk_free_bytes / GB:.1f} GB free at {facts.disk_path} "
            f"{'>=' if ok else '<'} {_num(round(disk_bytes / GB, 3))} GB required for {a}{extra}",
        )
    )
    if need.local_storage:
        verdicts.append(_storage(facts, a))
    if need.clock:
        verdicts.append(_clock_verdict(facts.clock, a))
    return verdicts


def _storage(facts: Facts, a: str) -> Verdict:
    mount = facts.mount
    if mount is None:
        return Verdict("storage", False, f"cannot tell the file system of {facts.disk_path}")
    fstype = mount.fstype
    if fstype in NETWORK_FS or fstype.startswith("fuse."):
        return Verdict(
            "storage",
            False,
            f"{facts.disk_path} is on {fstype} (mounted at {mount.point}): "
            f"{a} must not keep its data on a network file system",
        )
    return Verdict("storage", True, f"{facts.disk_path} is on local {fstype} ({mount.point})")


def _clock_verdict(clock: Clock | None, a: str) -> Verdict:
    why = "backend clocks must agree within 1.5 s"
    if clock is None:
        return Verdict("clock", False, f"cannot read the kernel clock state (adjtimex): {why}")
    if not clock.synchronized:
        return Verdict("clock", False, f"clock not synchronized by NTP on {a}: {why}")
    ok = clock.max_error_s <= MAX_CLOCK_ERROR_S
    return Verdict(
        "clock",
        ok,
        f"clock error up to {clock.max_error_s:.3f} s {'<=' if ok else '>'} "
        f"{_num(MAX_CLOCK_ERROR_S)} s allowed for {a} ({why})",
    )


# -- execution functions -------------------------------------------------------------------


def check(
    ctx: Context,
    role: str,
    data_dir: str,
    managed_nodes: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Check this node against the Chef HA requirements of ``role``; changes nothing.

    Returns one ``{name, ok, message}`` per check: cores, memory, disk (free space at
    ``data_dir`` or its nearest existing parent), and for a backend storage (no network
    file system) and clock (synchronized, error <= 0.75 s).

    Args:
        role: "backend" or "frontend".
        data_dir: where the role keeps its data (/var/opt/chef-backend, /var/opt/opscode).
        managed_nodes: nodes the Chef server manages (2 MB of backend disk each).
        overrides: pillar ``chef_ha:preflight``: cores, memory_gb, disk_gb,
            disk_mb_per_node (numbers), local_storage, clock (true/false).
    """
    if isinstance(managed_nodes, bool) or not isinstance(managed_nodes, int) or managed_nodes < 0:
        raise ExecutionError(f"managed_nodes must be an integer >= 0, got {managed_nodes!r}")
    need = requirement_for(role, overrides)
    try:
        facts = read_facts(data_dir)
    except OSError as exc:
        raise ExecutionError(f"cannot read node facts: {exc}") from exc
    return [
        {"name": v.name, "ok": v.ok, "message": v.message}
        for v in evaluate(role, facts, need, managed_nodes)
    ]


def existing(ctx: Context, *paths: str) -> list[str]:
    """The ``paths`` that exist, in the order given (a dangling symlink counts).

    States use it to manage the mode of files they must never create.
    """
    return [path for path in paths if os.path.lexists(path)]


FUNCTIONS: dict[str, Callable[..., Any]] = {"check": check, "existing": existing}
