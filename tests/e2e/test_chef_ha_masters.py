"""The Chef HA lab served by three masters (a real PostgreSQL store, a real leader etcd):
the leading master is killed in the middle of healing a follower, and the heal completes
through the next leader — the demo's row, as a test. Its own lab on 127.0.2.x, beside the
tier's one-master lab on 127.0.1.x."""

from collections.abc import Iterator

import pytest

from saline.lab.chefha import demo
from saline.lab.chefha.cluster import ChefLab
from saline.lab.masters import LeaderKiller
from tests.e2e.conftest import chef_lab
from tests.integration.test_failover import rows


@pytest.fixture(scope="module")
def chef3() -> Iterator[ChefLab]:
    with chef_lab("saline-chefha3-", subnet="127.0.2", masters=3) as lab:
        yield lab


def test_the_leader_killed_mid_heal_the_next_leader_finishes_it(chef3: ChefLab) -> None:
    several = chef3.several()
    assert several is not None
    killer = LeaderKiller(several)
    first = killer.leader()
    feed = demo.EventFeed(several.client(killer.standby()).path)
    lines: list[str] = []
    outcome = demo.run_scenario(
        chef3.directory, feed, demo.LEADER_KILLED, lines.append, killer.kill
    )
    try:
        assert outcome.killed is not None, "\n".join(lines)
        assert outcome.healed is not None, "\n".join(lines)
        assert outcome.started is not None and outcome.started < outcome.killed
        # the reaction was decided by the killed leader and finished by the next one
        [(reaction, epoch, result)] = rows(
            several,
            "SELECT id, epoch, outcome FROM reactions WHERE rule = 'chef-pg-follower-down' "
            f"AND verdict = 'fire' AND created >= {outcome.injected}",
        )
        assert result == "ok"
        assert killer.leader() != first
        restarts = rows(
            several,
            "SELECT count(*) FROM jobs WHERE fun = 'chef_backend.restart' "
            f"AND created >= {outcome.injected}",
        )
        assert restarts == [(1,)], "the restart job was sent once, not again by the next leader"
        assert epoch > 0 and reaction
    finally:
        killer.restart()
