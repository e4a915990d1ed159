"""Leadership in a real three-member etcd (etcd's JSON gateway): one leader at a time, an
epoch that grows with every new leader, a paused leader that stops believing it leads
before another is elected, and nobody leading while etcd has no quorum."""

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from master.etcd_gateway import EtcdGateway, EtcdUnavailable
from master.leadership import Leadership, Term
from tests.etcdcluster import EtcdCluster

TTL = 2


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    base = Path(tempfile.mkdtemp(prefix="saline-leader-etcd-"))
    cluster = EtcdCluster(base, size=3)
    try:
        cluster.start()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


_keys = iter(range(10_000))


@pytest.fixture
def key() -> str:
    return f"/saline/test-leader-{next(_keys)}"


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Candidate:
    def __init__(self, etcd: EtcdCluster, name: str, key: str) -> None:
        self.terms: list[Term] = []
        self.leadership = Leadership(
            EtcdGateway(etcd.client_urls, timeout=0.5), name, TTL, key, self.terms.append
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> "Candidate":
        self.task = asyncio.create_task(self.leadership.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def pause(self) -> None:
        """As SIGSTOP: its rounds stop (the task is cancelled without resigning)."""
        assert self.task is not None
        self.leadership.resign = _no_resign  # type: ignore[method-assign]
        self.task.cancel()
        self.task = None


async def _no_resign() -> None:
    return None


Pair = tuple[Candidate, Candidate]


def _with_pair(etcd: EtcdCluster, key: str, scenario: Callable[[Pair], Awaitable[None]]) -> None:
    """Run ``scenario`` on two candidates m1 and m2 in a fresh event loop; stop both after."""

    async def main() -> None:
        a, b = Candidate(etcd, "m1", key), Candidate(etcd, "m2", key)
        try:
            await scenario((a, b))
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def _leaders(*candidates: Candidate) -> list[str]:
    return [c.leadership.name for c in candidates if c.leadership.leading()]


def test_exactly_one_of_two_leads_and_the_other_knows_who(etcd: EtcdCluster, key: str) -> None:
    async def scenario(pair: Pair) -> None:
        a, b = pair
        a.start()
        b.start()
        await _until(lambda: len(_leaders(a, b)) == 1, 5, "one leader")
        [leader] = [c for c in (a, b) if c.leadership.leading()]
        other = b if leader is a else a
        await _until(lambda: other.leadership.term.leader == leader.leadership.name, 5, "seen")
        assert other.leadership.term.epoch == leader.leadership.epoch > 0
        for _ in range(3 * TTL):  # it holds across many refreshes, and only one leads
            await asyncio.sleep(TTL / 3)
            assert _leaders(a, b) == [leader.leadership.name]

    _with_pair(etcd, key, scenario)


def test_a_resigning_leader_hands_over_at_once_with_a_higher_epoch(
    etcd: EtcdCluster, key: str
) -> None:
    async def scenario(pair: Pair) -> None:
        a, b = pair
        a.start()
        await _until(a.leadership.leading, 5, "m1 leads")
        first = a.leadership.epoch
        b.start()
        await a.stop()  # resigns: the lease is revoked
        assert a.terms[-1].reason == "resigned"
        await _until(b.leadership.leading, TTL, "m2 leads within one TTL")
        assert b.leadership.epoch > first

    _with_pair(etcd, key, scenario)


def test_a_paused_leader_stops_leading_before_another_is_elected(
    etcd: EtcdCluster, key: str
) -> None:
    async def scenario(pair: Pair) -> None:
        a, b = pair
        a.start()
        await _until(a.leadership.leading, 5, "m1 leads")
        b.start()
        a.pause()
        await _until(lambda: not a.leadership.leading(), TTL, "m1 no longer believes it leads")
        assert not b.leadership.leading(), "m1 stops believing before m2 can be elected"
        await _until(b.leadership.leading, 3 * TTL, "m2 leads once the lease expired")
        assert b.leadership.epoch > a.leadership.epoch
        a.leadership.resign = Leadership.resign.__get__(a.leadership)  # type: ignore[method-assign]
        a.start()  # it wakes up: its lease is gone, it follows
        await _until(lambda: a.leadership.term.leader == "m2", 5, "m1 sees m2 lead")
        assert "expired" in a.terms[-2].reason or "safe time" in a.terms[-2].reason
        assert _leaders(a, b) == ["m2"]

    _with_pair(etcd, key, scenario)


def test_nobody_leads_without_quorum_and_leadership_returns(etcd: EtcdCluster, key: str) -> None:
    async def scenario() -> None:
        a = Candidate(etcd, "m1", key).start()
        try:
            await _until(a.leadership.leading, 5, "m1 leads")
            etcd.kill("etcd2")
            etcd.kill("etcd3")
            await _until(lambda: not a.leadership.leading(), 2 * TTL, "leadership lost with quorum")
            assert a.leadership.last_error is not None
            etcd.restart("etcd2")
            etcd.restart("etcd3")
            etcd.wait_healthy()
            await _until(a.leadership.leading, 10 * TTL, "leadership back with quorum")
        finally:
            await a.stop()

    asyncio.run(scenario())


def test_an_unreachable_etcd_is_one_error_naming_each_endpoint() -> None:
    gateway = EtcdGateway(["http://127.0.0.1:1", "http://127.0.0.1:2"], timeout=0.2)
    with pytest.raises(EtcdUnavailable, match=r"127\.0\.0\.1:1.*127\.0\.0\.1:2"):
        gateway.grant(2)
