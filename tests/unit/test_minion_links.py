"""A minion with several masters: the ``master`` list, the job dedup set, the choice of link,
and ``saline call``'s relay moving on to the next master (real CurveZMQ sockets)."""

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from minion.channel import ChannelError
from minion.config import MinionConfig, load_minion_config
from minion.links import LinkState, SeenJobs, choose
from minion.masterlink import MasterRelay
from saline.codec import decode_from_minion, encode
from saline.errors import SalineError
from saline.jid import new_jid
from saline.keys import KeyPair, load_or_create_keypair
from saline.lab.lab import free_port
from saline.protocol import (
    Ack,
    Event,
    FileReply,
    FileRequest,
    Job,
    MinionMessage,
    Return,
    Welcome,
)
from saline.supervisor import Supervisor
from saline.transport import bind_router

C, P, R, Y = LinkState.CONNECTING, LinkState.PENDING, LinkState.REFUSED, LinkState.READY

# -- config ------------------------------------------------------------------------------


def test_a_single_master_string_works_as_before() -> None:
    assert MinionConfig().masters == [("127.0.0.1", 4606)]
    assert MinionConfig(master="m1.example.com", master_port=5000).masters == [
        ("m1.example.com", 5000)
    ]
    assert MinionConfig(master="::1").masters == [("::1", 4606)]  # a bare IPv6 address


def test_a_list_of_masters_keeps_its_order_and_fills_in_master_port() -> None:
    config = MinionConfig(
        master=["m1", "m2:4700", "10.0.0.3", "[::1]:4607", "[fd00::2]"], master_port=4800
    )
    assert config.masters == [
        ("m1", 4800),
        ("m2", 4700),
        ("10.0.0.3", 4800),
        ("::1", 4607),
        ("fd00::2", 4800),
    ]


@pytest.mark.parametrize(
    ("master", "said"),
    [
        (["m1", "m2:0"], "master entry 'm2:0': port '0' is not 1-65535"),
        ("m1:70000", "master entry 'm1:70000': port '70000' is not 1-65535"),
        (["m1:http"], "master entry 'm1:http': port 'http' is not 1-65535"),
        (["m1", "bad host"], "master entry 'bad host': 'bad host' is not a host name"),
        ([""], "master entry '': '' is not a host name"),
        (["[::1"], "master entry '[::1': no closing ']'"),
        (["[::1]4606"], "master entry '[::1]4606': expected ':PORT' after ']'"),
        (["[nope]:4606"], "master entry '[nope]:4606': 'nope' is not an IPv6 address"),
        (["a:b:c"], "master entry 'a:b:c': 'a:b:c' is not an IPv6 address"),
        ([], "give at least one master"),
    ],
)
def test_a_bad_master_entry_is_refused_by_name(master: str | list[str], said: str) -> None:
    with pytest.raises(ValidationError, match="master") as e:
        MinionConfig(master=master)
    assert said in str(e.value)


@pytest.mark.parametrize(
    ("master", "said"),
    [
        (["m1", "m1"], "master entry 'm1' names the same master as 'm1'"),
        (["m1", "m1:4606"], "master entry 'm1:4606' names the same master as 'm1'"),
        (["M1:4606", "m1"], "master entry 'm1' names the same master as 'M1:4606'"),
        (["::1", "[0::1]:4606"], "master entry '[0::1]:4606' names the same master as '::1'"),
    ],
)
def test_a_master_named_twice_is_refused(master: list[str], said: str) -> None:
    with pytest.raises(ValidationError) as e:
        MinionConfig(master=master)
    assert said in str(e.value)


def test_the_same_host_on_two_ports_is_two_masters() -> None:
    assert MinionConfig(master=["m1", "m1:4607"]).masters == [("m1", 4606), ("m1", 4607)]


def test_a_bad_entry_in_a_file_names_the_file_line_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "minion.yaml"
    path.write_text("id: be1\nmaster:\n  - m1\n  - m2:99999\n")
    with pytest.raises(SalineError) as e:
        load_minion_config(str(path))
    assert str(path) in str(e.value) and "master" in str(e.value)
    assert "'m2:99999'" in str(e.value)


# -- jobs run once -----------------------------------------------------------------------


def test_a_jid_seen_again_is_not_run_again() -> None:
    seen = SeenJobs()
    assert seen.first_time("j1")
    assert not seen.first_time("j1")  # the second master's copy, or a resend
    assert seen.first_time("j2")
    assert "j1" in seen and len(seen) == 2


def test_the_dedup_set_is_bounded_and_forgets_the_oldest() -> None:
    seen = SeenJobs(limit=3)
    for jid in ("a", "b", "c", "d"):
        assert seen.first_time(jid)
    assert len(seen) == 3
    assert "a" not in seen
    assert not seen.first_time("d")
    assert seen.first_time("a")  # forgotten: would run again (after 10,000 newer jobs)


def test_the_default_bound_is_ten_thousand() -> None:
    seen = SeenJobs()
    for i in range(10_001):
        seen.first_time(f"j{i}")
    assert len(seen) == 10_000 and "j0" not in seen and "j1" in seen


# -- which link a return or event goes to ------------------------------------------------


@pytest.mark.parametrize(
    ("states", "origin", "chosen"),
    [
        ([Y, Y], 1, 1),  # the job's own master, when it is ready
        ([Y, C], 1, 0),  # else the first ready one
        ([C, P, Y], 0, 2),
        ([Y, Y], None, 0),  # an event: the preferred master
        ([C, Y], None, 1),  # the preferred one is down: the next
        ([R, Y], None, 1),
        ([C, P], 1, None),  # none ready: spooled
        ([C, R], None, None),
        ([], None, None),
        ([Y, C], 7, 0),  # an origin that is no link (config changed): as if none
    ],
)
def test_the_link_chosen(states: list[LinkState], origin: int | None, chosen: int | None) -> None:
    assert choose(states, origin) == chosen


# -- saline call: the next master after a timeout ----------------------------------------


def _config(tmp_path: Path, masters: list[str], master_pub: str) -> MinionConfig:
    pki = tmp_path / "pki"
    load_or_create_keypair(pki, "minion")
    return MinionConfig(id="be1", master=masters, master_pub=master_pub, pki_dir=pki)


async def _answer_files(sock: zmq.asyncio.Socket) -> None:
    """A stand-in master: answers every file request with the file's path as its data."""
    while True:
        route, data = await sock.recv_multipart()
        msg = decode_from_minion(data, 1 << 20)
        assert isinstance(msg, FileRequest)
        reply = FileReply(req=msg.req, path=msg.path, data=msg.path.encode())
        await sock.send_multipart([route, encode(reply)])


def test_call_asks_the_next_master_when_the_first_does_not_answer(tmp_path: Path) -> None:
    master_keys = load_or_create_keypair(tmp_path / "master", "master")
    dead = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        server = bind_router(ctx, master_keys, "tcp://127.0.0.1:*", 1 << 20)
        live = server.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        answering = asyncio.create_task(_answer_files(server))
        relay = MasterRelay(_config(tmp_path, [dead, live], master_keys.public), "be1", 0.5)
        try:
            reply = await relay({"op": "file", "path": "top.yaml"})
            assert reply["data"] == b"top.yaml"
            assert relay.address == live  # it stays with the master that answered
            again = await relay({"op": "file", "path": "other.sls"})
            assert again["data"] == b"other.sls"
        finally:
            await relay.close()
            answering.cancel()
            server.close(linger=0)
            ctx.term()

    asyncio.run(scenario())


def test_call_fails_naming_every_master_tried(tmp_path: Path) -> None:
    master_keys = load_or_create_keypair(tmp_path / "master", "master")
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        relay = MasterRelay(_config(tmp_path, [first, second], master_keys.public), "be1", 0.3)
        try:
            with pytest.raises(ChannelError) as e:
                await relay({"op": "pillar"})
            assert f"any master at {first}, {second} within 0.3s" in str(e.value)
        finally:
            await relay.close()

    asyncio.run(scenario())


def test_call_with_one_master_names_it_as_before(tmp_path: Path) -> None:
    master_keys = load_or_create_keypair(tmp_path / "master", "master")
    only = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        relay = MasterRelay(_config(tmp_path, [only], master_keys.public), "be1", 0.2)
        try:
            with pytest.raises(ChannelError, match=f"the master at {only} within 0.2s"):
                await relay({"op": "pillar"})
        finally:
            await relay.close()

    asyncio.run(scenario())


# -- the daemon: jobs from either link, returns and events to the chosen one -------------


class _StandIn:
    """A ROUTER playing one master (no ZAP handler: libzmq accepts the minion's key)."""

    def __init__(self, ctx: zmq.asyncio.Context, keys: KeyPair) -> None:
        self.sock = bind_router(ctx, keys, "tcp://127.0.0.1:*", 1 << 20)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        self.route = b""

    async def expect(self, kind: str, timeout: float = 10.0) -> MinionMessage:
        """The next message of ``kind`` (hellos and heartbeats in between are skipped)."""

        async def next_of_kind() -> MinionMessage:
            while True:
                self.route, data = await self.sock.recv_multipart()
                msg = decode_from_minion(data, 1 << 20)
                if msg.kind == kind:
                    return msg
                assert msg.kind in ("hello", "heartbeat"), f"unexpected {msg!r}"

        return await asyncio.wait_for(next_of_kind(), timeout)

    async def send(self, message: BaseModel) -> None:
        await self.sock.send_multipart([self.route, encode(message)])


async def _until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_daemon_runs_a_job_once_and_routes_returns_and_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from minion.daemon import Minion

    caplog.set_level(logging.INFO, logger="minion.daemon")
    master_keys = load_or_create_keypair(tmp_path / "master", "master")

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        m1, m2 = _StandIn(ctx, master_keys), _StandIn(ctx, master_keys)
        config = MinionConfig(
            id="be1",
            master=[m1.address, m2.address],
            master_pub=master_keys.public,
            pki_dir=tmp_path / "pki",
            cachedir=tmp_path / "cache",
            service_provider="supervisor",
            heartbeat_interval=0.2,
            acceptance_wait=0.2,
            return_retry=0.5,
        )
        minion = Minion(config)
        supervisor = Supervisor(daemon="minion")
        await minion.start(supervisor)
        try:
            for master in (m1, m2):
                await master.expect("hello")
                await master.send(Welcome(id="be1"))
            await _until(lambda: [link.state for link in minion.links] == [Y, Y], "both ready")
            assert [link.address for link in minion.links] == [m1.address, m2.address]

            # a job from master 2 returns to master 2
            job = Job(jid=new_jid(), fun="test.echo", args=["once"])
            await m2.send(job)
            ret = await m2.expect("return")
            assert isinstance(ret, Return) and ret.jid == job.jid and ret.ret == "once"
            # the same jid again, from master 1 and from master 2: not run again
            for master in (m1, m2):
                await master.send(job)
                later = Job(jid=new_jid(), fun="test.echo", args=["later"])
                await master.send(later)
                got = await master.expect("return")  # the dedup came first, on one socket
                assert isinstance(got, Return) and got.jid == later.jid
                await master.send(Ack(jids=[later.jid]))
            seen_again = [r for r in caplog.records if "already seen" in r.getMessage()]
            assert [job.jid in r.getMessage() for r in seen_again] == [True, True]

            # an ack from master 1 unspools the return master 2 was sent
            spooled = config.cachedir / "spool" / f"{job.jid}.ret"
            assert spooled.exists()
            await m1.send(Ack(jids=[job.jid]))
            await _until(lambda: not spooled.exists(), "the return unspooled")

            # an event goes to the preferred master
            minion.fire_event("saline/test/one", {"n": 1})
            event = await m1.expect("event")
            assert isinstance(event, Event) and event.tag == "saline/test/one"
            await m1.send(Ack(events=[event.eid]))

            # master 2 goes away while its job runs: the return goes to master 1
            slow = Job(jid=new_jid(), fun="test.sleep", args=[1])
            await m2.send(slow)
            await _until(lambda: slow.jid in minion.seen_jobs, "the slow job received")
            m2.sock.close(linger=0)
            await _until(lambda: minion.links[1].state is C, "the link to master 2 lost")
            ret = await m1.expect("return")
            assert isinstance(ret, Return) and ret.jid == slow.jid and ret.success
            lost = f"master {m2.address}: link lost (1 of 2 masters ready)"
            assert any(lost in r.getMessage() for r in caplog.records)
        finally:
            await supervisor.stop()
            await minion.stop()
            m1.sock.close(linger=0)
            ctx.term()

    asyncio.run(scenario())
