"""The pure parts of a lab of several masters: the configs it writes, and the etcd proxy's
on/off switch on real loopback sockets."""

import asyncio
import os
import socket
from pathlib import Path

import pytest
import yaml

from master.config import load_master_config
from minion.config import load_minion_config
from saline.keys import KeyRing, KeyState
from saline.lab import etcd
from saline.lab.lab import Lab, MasterSpec
from saline.lab.masters import free_ports, master_names, master_settings, process_state
from saline.lab.tcp_proxy import Address, Proxy, Route


def _layout(directory: Path, minions: int = 2) -> tuple[Lab, list[MasterSpec]]:
    lab = Lab(directory)
    ports = free_ports(3)
    specs = [
        MasterSpec(
            name,
            directory / "masters" / name,
            directory / "masters" / name / "master.yaml",
            port,
            master_settings(name, directory / "store.dsn", [f"http://127.0.0.1:{port + 1}"]),
        )
        for name, port in zip(master_names(3), ports, strict=True)
    ]
    lab.write_layout(minions, specs[0].port, None, masters=specs)
    return lab, specs


def test_each_master_config_loads_with_its_own_name_port_and_dirs(tmp_path: Path) -> None:
    lab, specs = _layout(tmp_path / "lab")
    seen_dirs: set[Path] = set()
    for spec in specs:
        config, _ = load_master_config(str(spec.config))
        assert config.master_name == spec.name
        assert config.port == spec.port
        assert config.store == str(tmp_path / "lab" / "store.dsn")
        assert config.etcd_endpoints == [f"http://127.0.0.1:{spec.port + 1}"]
        assert config.leader_ttl == 3
        assert config.metrics_listen is not None
        assert config.file_roots == [tmp_path / "lab" / "states"]
        assert config.reactor_dirs == [tmp_path / "lab" / "reactors"]
        assert config.runbook_roots == [tmp_path / "lab" / "runbooks"]
        for path in (config.pki_dir, config.data_dir, config.sock_dir):
            assert path.is_absolute()
            seen_dirs.add(path)
    assert len(seen_dirs) == 9, "masters share a pki, data or socket dir"
    # the CLI's default config is m1's
    assert lab.master_config.read_text() == specs[0].config.read_text()
    assert lab.state["port"] == specs[0].port
    assert list(lab.state["masters"]) == ["m1", "m2", "m3"]


def test_one_keypair_in_every_pki_and_every_minion_accepted_by_every_master(
    tmp_path: Path,
) -> None:
    _, specs = _layout(tmp_path / "lab", minions=3)
    pkis = [spec.home / "pki" for spec in specs]
    assert len({(p / "master.pub").read_text() for p in pkis}) == 1
    assert len({(p / "master.key").read_text() for p in pkis}) == 1
    for pki in pkis:
        assert (pki / "master.key").stat().st_mode & 0o777 == 0o600
        ring = KeyRing(pki)
        assert sorted(ring.ids(KeyState.ACCEPTED)) == ["be1", "be2", "fe1"]
        assert ring.ids(KeyState.PENDING) == []
    public = (pkis[0] / "master.pub").read_text().strip()
    for minion in ("be1", "be2", "fe1"):
        config, _ = load_minion_config(str(tmp_path / "lab" / "minions" / minion / "minion.yaml"))
        assert config.master_pub == public
        assert config.masters == [("127.0.0.1", spec.port) for spec in specs]


def test_layout_written_again_keeps_the_keys(tmp_path: Path) -> None:
    _, specs = _layout(tmp_path / "lab")
    before = (specs[2].home / "pki" / "master.pub").read_text()
    minion_pub = (tmp_path / "lab" / "minions" / "be1" / "pki" / "minion.pub").read_text()
    _, specs = _layout(tmp_path / "lab")
    assert (specs[2].home / "pki" / "master.pub").read_text() == before
    ring = KeyRing(specs[2].home / "pki")
    entry = ring.get("be1", KeyState.ACCEPTED)
    assert entry is not None and entry.public == minion_pub.strip()


def test_one_master_layout_is_unchanged(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab")
    lab.write_layout(1, 4999, None)
    config = yaml.safe_load(lab.master_config.read_text())
    assert config["pki_dir"] == str(tmp_path / "lab" / "master" / "pki")
    assert config["sock_dir"] == str(tmp_path / "lab" / "master" / "sock")
    assert "master_name" not in config and "store" not in config
    minion = yaml.safe_load((tmp_path / "lab" / "minions" / "be1" / "minion.yaml").read_text())
    assert (minion["master"], minion["master_port"]) == ("127.0.0.1", 4999)
    assert "masters" not in lab.state


def test_etcd_members_and_proxies_render(tmp_path: Path) -> None:
    ports = free_ports(6 + 3)
    members = etcd.members(tmp_path, ports[:6])
    assert list(members) == ["e1", "e2", "e3"]
    assert [m["client_url"] for m in members.values()] == [
        f"http://127.0.0.1:{p}" for p in ports[:6:2]
    ]
    for name, svc in members.items():
        argv = svc["argv"]
        assert argv[argv.index("--name") + 1] == name
        assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "leader-etcd" / name / "data")
        assert svc["marker"] in argv
        initial = argv[argv.index("--initial-cluster") + 1]
        assert initial.count("=http://127.0.0.1:") == 3
    proxy = etcd.proxy(tmp_path, "m2", ports[6:], members)
    assert proxy["endpoints"] == [f"http://127.0.0.1:{p}" for p in ports[6:]]
    routes = [proxy["argv"][i + 1] for i, a in enumerate(proxy["argv"]) if a == "--route"]
    assert routes == [
        f"127.0.0.1:{listen}=127.0.0.1:{svc['port']}"
        for listen, svc in zip(ports[6:], members.values(), strict=True)
    ]
    assert proxy["marker"] == str(tmp_path / "masters" / "m2" / "etcd-proxy.json")


def test_free_ports_are_distinct_and_process_state_reads_proc() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert process_state(os.getpid()) in ("R", "S")
    assert process_state(2**22 + 1) is None


@pytest.mark.parametrize("text", ["127.0.0.1", "host:", ":80", "h:99999", "h:x"])
def test_address_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        Address.parse(text)


# -- the proxy's switch, on real sockets -------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    return data


def test_proxy_forwards_cut_refuses_and_drops_heal_restores() -> None:
    async def scenario() -> None:
        upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
        up_port = upstream.sockets[0].getsockname()[1]
        proxy = Proxy([Route(Address("127.0.0.1", 0), Address("127.0.0.1", up_port))])
        await proxy.open()
        port = proxy.routes[0].listen.port
        assert port != 0
        assert await _roundtrip(port, b"hello") == b"hello"

        # a connection open when the cut comes is dropped
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        await proxy.close()
        assert proxy.cut
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        # and a new one is refused
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

        await proxy.open()  # the same port again
        assert not proxy.cut and proxy.routes[0].listen.port == port
        assert await _roundtrip(port, b"again") == b"again"
        await proxy.open()  # idempotent
        await proxy.close()
        upstream.close()
        await upstream.wait_closed()

    asyncio.run(scenario())


def test_proxy_closes_a_client_whose_upstream_is_down() -> None:
    async def scenario() -> None:
        (dead,) = free_ports(1)
        proxy = Proxy([Route(Address("127.0.0.1", 0), Address("127.0.0.1", dead))])
        await proxy.open()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.routes[0].listen.port)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        await proxy.close()

    asyncio.run(scenario())


def test_free_port_from_free_ports_binds() -> None:
    (port,) = free_ports(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
