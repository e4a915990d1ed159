"""Collect the grains a minion reports: cheap local facts only, nothing that can hang.

No DNS lookups (``socket.getfqdn`` may block on a dead resolver) and no psutil: everything
comes from /proc, /etc and ``os.uname``.
"""

import ipaddress
import os
import shlex
import socket
from pathlib import Path
from typing import Any

import saline
from minion.config import MinionConfig

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")
MEMINFO = Path("/proc/meminfo")
OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
ETC_HOSTNAME = Path("/etc/hostname")

#: os-release ID -> grain "os"
_OS_NAMES = {
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "centos": "CentOS",
    "rhel": "RedHat",
    "rocky": "Rocky",
    "almalinux": "AlmaLinux",
    "ol": "OEL",
    "fedora": "Fedora",
    "amzn": "Amazon",
    "sles": "SUSE",
    "opensuse-leap": "Leap",
    "alpine": "Alpine",
    "arch": "Arch",
}
#: os-release ID or ID_LIKE -> grain "os_family"
_OS_FAMILIES = {
    "debian": "Debian",
    "ubuntu": "Debian",
    "rhel": "RedHat",
    "centos": "RedHat",
    "fedora": "RedHat",
    "rocky": "RedHat",
    "almalinux": "RedHat",
    "ol": "RedHat",
    "amzn": "RedHat",
    "suse": "Suse",
    "sles": "Suse",
    "opensuse": "Suse",
    "alpine": "Alpine",
    "arch": "Arch",
}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=VALUE lines of os-release(5), shell quoting removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = " ".join(words)
    return values


def os_grains(release: dict[str, str]) -> dict[str, str]:
    """os, os_family, osrelease and oscodename from parsed os-release values."""
    os_id = release.get("ID", "").lower()
    name = _OS_NAMES.get(os_id) or release.get("NAME") or os.uname().sysname
    family = _OS_FAMILIES.get(os_id)
    if family is None:
        for like in release.get("ID_LIKE", "").lower().split():
            if like in _OS_FAMILIES:
                family = _OS_FAMILIES[like]
                break
    codename = release.get("VERSION_CODENAME", "")
    if not codename:
        # Older releases only say it in VERSION: "9 (stretch)".
        version = release.get("VERSION", "")
        if "(" in version and version.endswith(")"):
            codename = version[version.rindex("(") + 1 : -1]
    return {
        "os": name,
        "os_family": family or name,
        "osrelease": release.get("VERSION_ID", ""),
        "oscodename": codename,
    }


def parse_fib_trie(text: str) -> list[str]:
    """The host's own IPv4 addresses: the "/32 host LOCAL" leaves of /proc/net/fib_trie."""
    addresses: set[str] = set()
    last_ip = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last_ip = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last_ip:
            addresses.add(last_ip)
    return sorted(addresses, key=ipaddress.IPv4Address)


def parse_if_inet6(text: str) -> list[str]:
    """The host's IPv6 addresses from /proc/net/if_inet6 (32 hex digits per line)."""
    addresses: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                addresses.add(str(ipaddress.IPv6Address(int(fields[0], 16))))
            except ValueError:
                continue
    return sorted(addresses, key=ipaddress.IPv6Address)


def _ipv4() -> list[str]:
    addresses = set(parse_fib_trie(_read(FIB_TRIE)))
    if len(addresses) <= 1:
        # No /proc (or only loopback seen): ask the routing table which source address it
        # would use. connect() on UDP sends nothing, so this cannot block on the network.
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect(("192.0.2.1", 9))
                addresses.add(sock.getsockname()[0])
        except OSError:
            pass
    addresses.add("127.0.0.1")
    return sorted(addresses, key=ipaddress.IPv4Address)


def parse_meminfo_mib(text: str) -> int:
    """MemTotal of /proc/meminfo in MiB (0 when unknown)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                return int(fields[1]) // 1024
            except (IndexError, ValueError):
                return 0
    return 0


def _fqdn(hostname: str) -> str:
    if "." in hostname:
        return hostname
    configured = _read(ETC_HOSTNAME).strip()
    return configured if "." in configured else hostname


def collect_grains(config: MinionConfig, minion_id: str) -> dict[str, Any]:
    """Return the collected grains with the config's static grains on top."""
    hostname = socket.gethostname()
    release: dict[str, str] = {}
    for path in OS_RELEASE_PATHS:
        release = parse_os_release(_read(path))
        if release:
            break
    uname = os.uname()
    grains: dict[str, Any] = {
        "id": minion_id,
        "host": hostname.split(".")[0],
        "fqdn": _fqdn(hostname),
        "ipv4": _ipv4(),
        "ipv6": parse_if_inet6(_read(IF_INET6)),
        **os_grains(release),
        "kernel": uname.sysname,
        "kernelrelease": uname.release,
        "cpuarch": uname.machine,
        "num_cpus": os.cpu_count() or 1,
        "mem_total": parse_meminfo_mib(_read(MEMINFO)),
        "saline_version": saline.__version__,
    }
    grains.update(config.grains)
    return grains


def minion_id(config: MinionConfig) -> str:
    """The configured id, else this host's fqdn."""
    return config.id or _fqdn(socket.gethostname())
