"""Grain collection: parsers on fixed samples, collect_grains on this host."""

import os
import socket
import time
from pathlib import Path

import pytest

import saline
from minion import grains
from minion.config import MinionConfig

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 10.0.0.0/24 2 0 2
           |-- 10.0.0.0
              /24 link UNICAST
           |-- 10.0.0.12
              /32 host LOCAL
           |-- 9.1.2.3
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 127.0.0.1
              /32 host LOCAL
           |-- 10.0.0.12
              /32 host LOCAL
"""

IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
garbage line
"""

DEBIAN = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
# a comment
"""

ROCKY = """\
NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
"""

OBSCURE = """\
NAME='Obscure OS'
ID=obscure
ID_LIKE="ubuntu debian"
VERSION="1.0 (Quirky)"
VERSION_ID=1.0
"""


def config(tmp_path: Path, **kwargs: object) -> MinionConfig:
    return MinionConfig(cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki", **kwargs)


def test_parse_fib_trie_keeps_local_host_addresses_once() -> None:
    assert grains.parse_fib_trie(FIB_TRIE) == ["9.1.2.3", "10.0.0.12", "127.0.0.1"]
    assert grains.parse_fib_trie("") == []


def test_parse_if_inet6() -> None:
    assert grains.parse_if_inet6(IF_INET6) == ["::1", "fd00::2", "fe80::fc:ff:fe00:1"]


def test_parse_meminfo() -> None:
    text = "MemFree:  1000 kB\nMemTotal:       16384000 kB\n"
    assert grains.parse_meminfo_mib(text) == 16000
    assert grains.parse_meminfo_mib("") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DEBIAN, ("Debian", "Debian", "12", "bookworm")),
        (ROCKY, ("Rocky", "RedHat", "9.3", "Blue Onyx")),
        (OBSCURE, ("Obscure OS", "Debian", "1.0", "Quirky")),
    ],
)
def test_os_grains(text: str, expected: tuple[str, str, str, str]) -> None:
    result = grains.os_grains(grains.parse_os_release(text))
    assert (result["os"], result["os_family"], result["osrelease"], result["oscodename"]) == (
        expected
    )


def test_collect_grains_on_this_host(tmp_path: Path) -> None:
    started = time.monotonic()
    collected = grains.collect_grains(config(tmp_path), "m1")
    assert time.monotonic() - started < 2  # nothing that can block on the network
    assert collected["id"] == "m1"
    assert collected["saline_version"] == saline.__version__
    assert "127.0.0.1" in collected["ipv4"]
    assert isinstance(collected["ipv6"], list)
    assert collected["num_cpus"] == os.cpu_count()
    assert collected["mem_total"] > 0
    assert collected["kernel"] == os.uname().sysname
    assert collected["kernelrelease"] == os.uname().release
    assert collected["cpuarch"] == os.uname().machine
    assert "." not in collected["host"]
    for key in ("os", "os_family", "osrelease", "oscodename", "fqdn"):
        assert isinstance(collected[key], str)
    assert collected["os"] != ""


def test_static_grains_override_collected(tmp_path: Path) -> None:
    collected = grains.collect_grains(config(tmp_path, grains={"role": "backend", "os": "X"}), "m1")
    assert collected["role"] == "backend"
    assert collected["os"] == "X"


def test_fqdn_from_etc_hostname(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc_hostname = tmp_path / "hostname"
    monkeypatch.setattr(grains, "ETC_HOSTNAME", etc_hostname)
    monkeypatch.setattr(socket, "gethostname", lambda: "node1")

    etc_hostname.write_text("node1\n")
    assert grains.minion_id(config(tmp_path)) == "node1"
    etc_hostname.write_text("node1.example.com\n")
    assert grains.minion_id(config(tmp_path)) == "node1.example.com"
    collected = grains.collect_grains(config(tmp_path), "x")
    assert (collected["host"], collected["fqdn"]) == ("node1", "node1.example.com")

    assert grains.minion_id(config(tmp_path, id="explicit-id")) == "explicit-id"


def test_dotted_hostname_is_the_fqdn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "db2.lab.internal")
    collected = grains.collect_grains(config(tmp_path), "x")
    assert (collected["host"], collected["fqdn"]) == ("db2", "db2.lab.internal")
