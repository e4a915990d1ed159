"""The follower ladder runbook (chef/heal_follower) and probe steps, on the real orchestrator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from reactors.runbook import RunbookError, find_runbook, load_runbook
from reactors.shipped import SHIPPED_RUNBOOKS
from tests.unit.test_orchestrate import BACKENDS, FakeClock, FakeRunner, Reply, execute

LADDER = load_runbook(find_runbook("chef/heal_follower", [SHIPPED_RUNBOOKS]))
VARS = {"node": "be2", "host": "127.0.1.2", "port": "5432", "leader": "be1"}
VARS |= {"leader_host": "127.0.1.1", "leader_port": "5432"}
FIXES = (
    "postgres.resume_replay",
    "chef_backend.restart",
    "chef_backend.pgsql_follow",
    "chef_backend.reclone",
)


@dataclass
class Follower(FakeRunner):
    """be2 stays out of sync until the call named ``cure`` (with ``cure_kwargs``) ran."""

    cure: tuple[str, dict[str, Any]] | None = None
    healed: bool = False

    def reply(self, minion: str, fun: str) -> Reply:
        last = self.calls[-1]
        if self.cure and fun == self.cure[0] and self.cure[1].items() <= last.kwargs.items():
            self.healed = True
        if fun == "postgres.replication" and last.kwargs.get("host") == VARS["leader_host"]:
            return Reply(ret={"in_sync": False, "role": "leader"})  # the leader leads
        if fun == "postgres.replication":
            return Reply(ret={"in_sync": self.healed, "role": "follower"})
        return Reply()


def ladder(cure: tuple[str, dict[str, Any]] | None, healed: bool = False) -> Follower:
    runner = Follower(dict(BACKENDS), FakeClock(), cure=cure, healed=healed)
    return runner


def fixes(runner: FakeRunner) -> list[tuple[str, dict[str, Any]]]:
    return [(c.fun, c.kwargs) for c in runner.calls if c.fun in FIXES]


def after_asking_the_leader(runner: FakeRunner) -> str:
    """The function of the first call after the ladder asked whether the leader leads."""
    first, then = runner.calls[0], runner.calls[1]
    assert (first.fun, first.kwargs.get("host")) == ("postgres.replication", VARS["leader_host"])
    return then.fun


def test_an_in_sync_follower_needs_nothing() -> None:
    runner = ladder(None, healed=True)
    result = execute(LADDER, runner, vars=VARS)
    assert result.success
    assert fixes(runner) == []


def test_paused_replay_stops_at_the_first_rung() -> None:
    runner = ladder(("postgres.resume_replay", {}))
    result = execute(LADDER, runner, vars=VARS)
    assert result.success, result
    assert [f for f, _ in fixes(runner)] == ["postgres.resume_replay"]


def test_paused_replay_is_resumed_without_waiting_for_catch_up() -> None:
    runner = ladder(("postgres.resume_replay", {}))
    result = execute(LADDER, runner, vars={**VARS, "paused": True})
    assert result.success, result
    assert after_asking_the_leader(runner) == "postgres.resume_replay"


def test_wal_gone_climbs_every_rung_in_order_to_the_reclone() -> None:
    runner = ladder(("chef_backend.reclone", {}))
    result = execute(LADDER, runner, vars=VARS)
    assert result.success, result
    reclone = {
        "leader_host": "127.0.1.1", "leader_port": "5432", "host": "127.0.1.2", "port": "5432",
        "keep": ["postgresql.conf", "pg_hba.conf", "pg_ident.conf", "node.conf"],
        "stream_timeout": 30, "timeout": 600,
    }  # fmt: skip
    assert fixes(runner) == [
        ("postgres.resume_replay", {"host": "127.0.1.2", "port": "5432"}),
        ("chef_backend.restart", {}),
        ("chef_backend.pgsql_follow", {"leader": "be1"}),
        ("chef_backend.reclone", reclone),  # beside the old copy, never pgsql-follow --force
    ]
    assert {c.target for c in runner.calls} == {"be2"}  # never the leader


def test_a_follower_that_is_down_starts_at_the_restart() -> None:
    runner = ladder(("chef_backend.restart", {}))
    result = execute(LADDER, runner, vars={**VARS, "down": True})
    assert result.success, result
    assert [f for f, _ in fixes(runner)] == ["chef_backend.restart"]
    assert after_asking_the_leader(runner) == "chef_backend.restart"  # no catch-up wait


def test_a_ladder_that_fails_fails_the_runbook() -> None:
    runner = ladder(None)
    result = execute(LADDER, runner, vars=VARS)
    assert not result.success
    assert result.stopped_at == "in sync"


def test_a_probe_cannot_be_failhard() -> None:
    with pytest.raises(RunbookError, match="probe never stops"):
        load_runbook(
            "name: x\nsteps:\n  - {probe: true, failhard: true, run: {target: a, function: f.g}}\n"
        )
