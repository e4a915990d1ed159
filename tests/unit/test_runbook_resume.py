"""A reaction's runbook interrupted by its master's death resumes on the next one, step by
step, on its journal: journaled jobs are awaited from the store, never sent again."""

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from master.bus import EventBus
from master.inventory import Inventory
from master.jobrunner import NOT_STARTED, JournaledJobRunner
from master.jobs import JobManager
from master.presence import Presence
from master.reactions import ReactionExecutor
from master.store.base import (
    ActionProgress,
    Fenced,
    ReactionRecord,
    ReturnRecord,
    Store,
)
from master.store.rows import _progress
from master.store.sqlite import SqliteStore
from reactors.model import RenderedAction
from reactors.orchestrate import Runbook, load_runbook
from reactors.rules import OrchestrateAction
from saline.codec import decode_from_master
from saline.errors import SalineError, TargetError
from saline.keys import KeyRing, KeyState, generate_keypair
from saline.protocol import Job

RUNBOOK = load_runbook(
    """\
name: three
steps:
  - {name: one, run: {target: be1, function: test.echo, args: [one]}}
  - {name: two, run: {target: be1, function: test.echo, args: [two]}}
  - {name: three, run: {target: be1, function: test.echo, args: [three]}}
"""
)


class Master:
    """One master's job manager and executor over a shared store; its fake minion answers
    the jobs whose argument is in ``answer``."""

    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        epoch: int,
        answer: set[str],
        runbook: Runbook = RUNBOOK,
        failing: dict[str, str] | None = None,
    ) -> None:
        self.store, self.answer = store, answer
        #: argument -> the error be1 answers that job with
        self.failing = failing or {}
        presence = Presence(30.0)
        presence.start("be1", b"route")
        self.inventory = Inventory(keys, presence, store)
        self.bus = EventBus(store)
        self.jobs = JobManager(store, self.bus, self.inventory, self._send)
        #: (jid, first argument) of every job this master sent
        self.sent: list[tuple[str, str]] = []
        #: set by each job sent
        self.sending = asyncio.Event()
        self.finished: list[bool] = []
        self.executor = ReactionExecutor(
            store,
            self.bus,
            self.jobs,
            self.inventory,
            lambda name: runbook,
            self._finished,
            lambda: epoch,
        )

    def _finished(self, row: ReactionRecord, ok: bool) -> str:
        self.finished.append(ok)
        return f"reaction {row.id}: {ok}"

    def _send(self, minion: str, frame: bytes) -> bool:
        job = decode_from_master(frame, 1 << 20)
        assert isinstance(job, Job)
        self.sent.append((job.jid, str(job.args[0])))
        self.sending.set()
        error = self.failing.get(str(job.args[0]))
        if job.args[0] in self.answer or error is not None:
            asyncio.get_running_loop().call_soon(reply, self.store, job.jid, self.jobs, error)
        return True


def reply(store: Store, jid: str, jobs: JobManager | None = None, error: str | None = None) -> None:
    """be1's return of ``jid`` (failed with ``error`` if given), stored (as any master does)
    and told to ``jobs``."""
    ok = error is None
    ret = "ok" if ok else error
    record = ReturnRecord(jid, "be1", "test.echo", ok, 0 if ok else 1, ret, 1.0, time.time())
    store.save_returns([record])
    if jobs is not None:
        jobs.returned(record)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "master.db")
    yield store
    store.close()


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    keys = KeyRing(tmp_path / "pki")
    keys.add("be1", generate_keypair().public, KeyState.ACCEPTED)
    return keys


def fired(store: Store) -> ReactionRecord:
    action = OrchestrateAction(kind="orchestrate", runbook="three")  # type: ignore[call-arg]
    row = ReactionRecord(
        id="r1",
        event_seq=None,
        event_tag="test/resume",
        rule="resume",
        verdict="fire",
        reason="fired",
        key="be1",
        actions=[RenderedAction(action=action, cause="7", depth=1, rule="resume")],
        created=time.time(),
    )
    store.save_reactions([row])
    return row


def stored(store: Store) -> ReactionRecord:
    row = store.get_reaction("r1")
    assert row is not None
    return row


async def die_when(first: Master, row: ReactionRecord, jobs: int) -> None:
    """Run the reaction on ``first`` and kill it once ``jobs`` jobs were sent."""
    task = asyncio.create_task(first.executor.execute(row))
    while len(first.sent) < jobs:
        await asyncio.wait_for(first.sending.wait(), 10)
        first.sending.clear()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _test_a_resumed_runbook_awaits_its_journaled_jobs_and_runs_the_rest(
    store: Store, keys: KeyRing
) -> None:
    first = Master(store, keys, epoch=1, answer={"one"})
    await die_when(first, fired(store), jobs=2)  # died while step two ran
    assert [arg for _, arg in first.sent] == ["one", "two"]
    journal = stored(store).progress[0]
    assert (journal.state, journal.jids) == ("started", [jid for jid, _ in first.sent])

    second = Master(store, keys, epoch=2, answer={"one", "two", "three"})
    resumed = asyncio.create_task(second.executor.execute(stored(store)))
    reply(store, first.sent[1][0])  # step two's return arrives through another master
    await resumed
    assert [arg for _, arg in second.sent] == ["three"], "a journaled job was sent again"
    row = stored(store)
    assert row.outcome == "ok" and second.finished == [True]
    done = row.progress[0]
    assert done.state == "done"
    assert done.jids == [first.sent[0][0], first.sent[1][0], second.sent[0][0]]
    assert "2 journaled job(s) awaited, not resent" in (done.detail or "")


async def _test_a_runbook_resumed_after_its_last_job_sends_nothing(
    store: Store, keys: KeyRing
) -> None:
    first = Master(store, keys, epoch=1, answer={"one", "two"})
    await die_when(first, fired(store), jobs=3)
    reply(store, first.sent[2][0])  # step three's return arrives after the master died
    second = Master(store, keys, epoch=2, answer=set())
    await second.executor.execute(stored(store))
    assert second.sent == [] and stored(store).outcome == "ok"


async def _test_a_deposed_leader_sends_no_runbook_job(store: Store, keys: KeyRing) -> None:
    row = fired(store)
    store.save_reactor_state({}, epoch=5)  # another master leads at epoch 5
    deposed = Master(store, keys, epoch=4, answer={"one", "two", "three"})
    with pytest.raises(Fenced):
        await deposed.executor.execute(row)
    assert deposed.sent == [] and deposed.finished == []


async def _test_a_journal_that_does_not_fit_the_runbook_fails_it_without_sending(
    store: Store, keys: KeyRing
) -> None:
    first = Master(store, keys, epoch=1, answer={"one"})
    await die_when(first, fired(store), jobs=2)
    row = stored(store)
    other = store.get_job(first.sent[0][0])
    assert other is not None  # as if the runbook had changed its path since:
    store.save_job(dataclasses.replace(other, jid="20260101000000000001", fun="test.ping"))
    row.progress[0].jids[0] = "20260101000000000001"
    second = Master(store, keys, epoch=2, answer={"one", "two", "three"})
    await second.executor.execute(row)
    row = stored(store)
    assert second.sent == [] and row.outcome == "failed"
    assert "took another path" in (row.progress[0].detail or "")


def test_a_progress_stored_before_the_journal_reads_with_an_empty_one() -> None:
    assert _progress({"state": "started", "jid": None, "detail": None}) == ActionProgress("started")


def test_a_resumed_runbook_awaits_its_journaled_jobs_and_runs_the_rest(
    store: Store, keys: KeyRing
) -> None:
    asyncio.run(_test_a_resumed_runbook_awaits_its_journaled_jobs_and_runs_the_rest(store, keys))


def test_a_runbook_resumed_after_its_last_job_sends_nothing(store: Store, keys: KeyRing) -> None:
    asyncio.run(_test_a_runbook_resumed_after_its_last_job_sends_nothing(store, keys))


def test_a_deposed_leader_sends_no_runbook_job(store: Store, keys: KeyRing) -> None:
    asyncio.run(_test_a_deposed_leader_sends_no_runbook_job(store, keys))


def test_a_journal_that_does_not_fit_the_runbook_fails_it_without_sending(
    store: Store, keys: KeyRing
) -> None:
    asyncio.run(_test_a_journal_that_does_not_fit_the_runbook_fails_it_without_sending(store, keys))


class _Unstartable:
    """A MasterJobRunner whose jobs cannot start (a target error): nothing is sent."""

    def start(self, *args: object) -> None:
        raise TargetError("bad target")

    def match(self, target: str, tgt_type: str) -> list[str]:
        return ["be1"]


async def _test_a_job_that_could_not_start_keeps_its_place_in_the_journal(store: Store) -> None:
    journal: list[str] = []
    saves: list[list[str]] = []
    runner = JournaledJobRunner(
        _Unstartable(),  # type: ignore[arg-type]
        store,
        journal,
        lambda: saves.append(list(journal)),
    )
    with pytest.raises(TargetError):
        await runner.run("be1", "glob", "test.echo", ["one"], {}, 5.0)
    assert journal == [NOT_STARTED] and saves == []  # nothing was sent: no save needed
    replay = JournaledJobRunner(
        _Unstartable(),  # type: ignore[arg-type]
        store,
        journal,
        lambda: None,
    )
    with pytest.raises(SalineError, match="could not be started"):
        await replay.run("be1", "glob", "test.echo", ["one"], {}, 5.0)
    assert replay.replayed == 0


def test_a_job_that_could_not_start_keeps_its_place_in_the_journal(store: Store) -> None:
    asyncio.run(_test_a_job_that_could_not_start_keeps_its_place_in_the_journal(store))


LADDER = load_runbook(
    """\
name: ladder
steps:
  - {name: resume, run: {target: be1, function: test.echo, args: [one]}, probe: true}
  - {name: reclone, run: {target: be1, function: test.echo, args: [two]}}
"""
)


def test_a_failed_ladder_says_which_rungs_failed_and_what_each_reported(
    store: Store, keys: KeyRing
) -> None:
    errors = {"one": "FATAL: password authentication failed", "two": "No space left on device"}
    master = Master(store, keys, 1, set(), runbook=LADDER, failing=errors)
    asyncio.run(master.executor.execute(fired(store)))
    row = stored(store)
    assert row.outcome == "failed" and master.finished == [False]
    detail = row.progress[0].detail or ""
    assert detail.startswith(
        "runbook ladder: stopped at reclone: test.echo failed on 1 of 1 minion(s): "
        "be1: failed (retcode 1): No space left on device; also failed: resume: "
    ), detail
    assert detail.endswith("be1: failed (retcode 1): FATAL: password authentication failed")
