"""The shipped Chef runbooks (``reactors/runbooks/chef/``): each loads and renders, and runs
through the real orchestrator on the fake job runner of ``test_orchestrate`` in the order the
reference's procedures require."""

from typing import Any

import pytest

from reactors.orchestrate import RunbookError, find_runbook, load_runbook
from reactors.runbook import Runbook, render_steps
from reactors.shipped import SHIPPED_RUNBOOKS
from tests.unit.test_orchestrate import Call, FakeClock, FakeRunner, Reply, execute

RUNBOOKS = SHIPPED_RUNBOOKS

LEVEL = {"major": 1, "minor": 48}
AT_LEVEL = Reply("ok", {"major": 1, "minor": 48, "sha256": "ab", "exists": True})
OLD_LEVEL = Reply("ok", {"major": 1, "minor": 47, "sha256": "cd", "exists": True})
MATCHES = Reply("ok", {"matches": True, "reason": "pillar key chef:backend_secrets holds it"})
NOT_YET = Reply("ok", {"matches": False, "reason": "no pillar key chef:backend_secrets on be1"})
HEALTHY = Reply("ok", {"healthy": True, "problems": []})

EXAMPLE_VARS: dict[str, dict[str, Any]] = {
    "chef/create_cluster": {
        "bootstrap": "be1",
        "joiners": ["be3", "be2"],
        "leader_address": "10.0.0.1",
    },
    "chef/add_frontend": {
        "frontend": "fe2",
        "fqdn": "fe2.example.com",
        "source_frontend": "fe1",
        "backend": "be1",
        "level": LEVEL,
    },
    "chef/rolling_upgrade": {"first": "fe1", "others": ["fe2", "fe3"], "level": LEVEL},
    "chef/fence_split_brain": {
        "a": "be1",
        "b": "be2",
        "a_node": "10.0.0.1:5432",
        "b_node": "10.0.0.2:5432",
    },
}


def runbook(name: str) -> Runbook:
    return load_runbook(find_runbook(name, [RUNBOOKS]))


def calls(runner: FakeRunner) -> list[tuple[str, str]]:
    """(function, target) of every job, in order."""
    return [(c.fun, c.target) for c in runner.calls]


def only(runner: FakeRunner, fun: str) -> list[Call]:
    return [c for c in runner.calls if c.fun == fun]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def runner(clock: FakeClock) -> FakeRunner:
    fake = FakeRunner(
        {
            **{f"fe{i}": {"role": "frontend"} for i in range(1, 5)},
            **{f"be{i}": {"role": "backend"} for i in range(1, 4)},
        },
        clock,
    )
    fake.job_seconds = 1.0  # every job takes a fake second: overlapping jobs would show
    return fake


# --- every shipped runbook -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLE_VARS))
def test_shipped_runbook_loads_and_renders(name: str) -> None:
    book = runbook(name)
    assert book.name == name
    assert book.description.strip()
    steps = render_steps(book, {**book.vars, **EXAMPLE_VARS[name]})
    assert len(steps) == len(book.steps)
    # a var can also be a comma-separated string (``--var others=fe2,fe3``)
    as_text = {k: ",".join(v) if isinstance(v, list) else v for k, v in EXAMPLE_VARS[name].items()}
    rendered = render_steps(book, {**book.vars, **as_text})
    assert [s.spec.target for s in rendered] == [s.spec.target for s in steps]


@pytest.mark.parametrize("name", sorted(EXAMPLE_VARS))
def test_a_missing_required_var_stops_before_anything_runs(name: str, runner: FakeRunner) -> None:
    book = runbook(name)
    for var in EXAMPLE_VARS[name]:
        if var in book.vars:  # has a default
            continue
        partial = {k: v for k, v in EXAMPLE_VARS[name].items() if k != var}
        with pytest.raises(RunbookError, match=var):
            execute(book, runner, vars=partial)
    assert runner.calls == []


@pytest.mark.parametrize("name", sorted(EXAMPLE_VARS))
def test_test_mode_runs_nothing(name: str, runner: FakeRunner) -> None:
    result = execute(runbook(name), runner, vars=EXAMPLE_VARS[name], test=True)
    assert runner.calls == []
    assert result.success and all(s.result in (None, True) for s in result.steps)


# --- chef/create_cluster ---------------------------------------------------------------------


@pytest.fixture
def backends(runner: FakeRunner) -> FakeRunner:
    runner.script[("be1", "chef_backend.pillar_matches")] = [NOT_YET, MATCHES]
    for minion in ("be1", "be2", "be3"):
        runner.script[(minion, "chef_backend.status")] = HEALTHY
    return runner


def create(runner: FakeRunner, **extra: Any) -> Any:
    return execute(
        runbook("chef/create_cluster"),
        runner,
        vars={**EXAMPLE_VARS["chef/create_cluster"], **extra},
    )


def test_create_cluster_order(backends: FakeRunner) -> None:
    result = create(backends)
    assert result.success, result.steps[-1].comment
    assert calls(backends) == [
        ("chef_backend.create_cluster", "be1"),
        ("chef_backend.pillar_matches", "be1"),  # not published yet
        ("chef_backend.pillar_matches", "be1"),  # published: the bootstrap's own file
        ("chef_backend.install_from_pillar", "be3,be2"),
        ("chef_backend.join_cluster", "be2"),
        ("chef_backend.join_cluster", "be3"),
        ("cmd.run", "be3,be2"),
        ("chef_backend.status", "be1,be2,be3"),
    ]
    install = only(backends, "chef_backend.install_from_pillar")[0]
    assert install.args == ["/root/chef-backend-secrets.json", "chef:backend_secrets"]
    assert install.kwargs == {"mode": "0600"}
    assert only(backends, "chef_backend.pillar_matches")[0].args == [
        "/etc/chef-backend/chef-backend-secrets.json",
        "chef:backend_secrets",
    ]


def test_create_cluster_joins_strictly_one_after_another(backends: FakeRunner) -> None:
    create(backends)
    joins = only(backends, "chef_backend.join_cluster")
    assert [(j.minions, j.tgt_type) for j in joins] == [(["be2"], "list"), (["be3"], "list")]
    # each join starts only after the previous job ended (every job takes one fake second)
    assert joins[1].at >= joins[0].at + backends.job_seconds
    assert all(
        j.kwargs == {"leader": "10.0.0.1", "secrets": "/root/chef-backend-secrets.json"}
        for j in joins
    )


def test_create_cluster_deletes_the_copies_after_every_join(backends: FakeRunner) -> None:
    create(backends)
    funs = [c.fun for c in backends.calls]
    delete = funs.index("cmd.run")
    assert delete > max(i for i, fun in enumerate(funs) if fun == "chef_backend.join_cluster")
    assert backends.calls[delete].args == [["rm", "-f", "--", "/root/chef-backend-secrets.json"]]
    assert backends.calls[delete].minions == ["be2", "be3"]


def test_create_cluster_failed_join_stops_and_keeps_the_copies(backends: FakeRunner) -> None:
    backends.script[("be2", "chef_backend.join_cluster")] = Reply("fail", {"retcode": 1})
    result = create(backends)
    assert [c.minions for c in only(backends, "chef_backend.join_cluster")] == [["be2"]]
    assert only(backends, "cmd.run") == []  # the copies stay for the retry
    assert result.stopped_at == "join the cluster"
    assert result.not_started == ["delete the copied secrets", "wait for a healthy cluster"]


def test_create_cluster_waits_for_the_secrets_and_gives_up(backends: FakeRunner) -> None:
    backends.script[("be1", "chef_backend.pillar_matches")] = NOT_YET
    result = create(backends)
    assert {fun for fun, _ in calls(backends)} == {
        "chef_backend.create_cluster",
        "chef_backend.pillar_matches",
    }
    assert result.stopped_at == "wait for the shared secrets in the pillar"
    assert "no pillar key chef:backend_secrets" in result.steps[-1].comment


def test_create_cluster_resume_skips_create(backends: FakeRunner) -> None:
    result = create(backends, skip_create=True)
    assert result.success and result.steps[0].skipped
    assert "chef_backend.create_cluster" not in [c.fun for c in backends.calls]


# --- chef/add_frontend -----------------------------------------------------------------------


@pytest.fixture
def frontends(runner: FakeRunner) -> FakeRunner:
    runner.script[("fe1", "chef_server.migration_level")] = AT_LEVEL
    runner.script[("be1", "chef_backend.pillar_matches")] = MATCHES
    runner.script[("fe1", "chef_server.pillar_matches")] = MATCHES
    return runner


def test_add_frontend_order(frontends: FakeRunner) -> None:
    result = execute(
        runbook("chef/add_frontend"), frontends, vars=EXAMPLE_VARS["chef/add_frontend"]
    )
    assert result.success, [s.comment for s in result.steps if not s.result]
    assert calls(frontends) == [
        ("chef_server.migration_level", "fe1"),
        ("chef_backend.gen_server_config", "be1"),
        ("chef_backend.pillar_matches", "be1"),
        ("chef_server.pillar_matches", "fe1"),
        ("chef_server.install_from_pillar", "fe2"),
        ("cmd.run", "be1"),
        ("chef_server.install_from_pillar", "fe2"),
        ("cmd.run", "fe2"),
        ("chef_server.set_migration_level", "fe2"),
        ("cmd.run", "fe2"),
        ("chef_server.reconfigure", "fe2"),
    ]
    _, gen, _, _, config, drop, secrets, mkdir, level, touch, _ = frontends.calls
    assert gen.args == ["fe2.example.com", "/root/chef-server.rb.generated"]
    assert config.args == ["/etc/opscode/chef-server.rb", "chef:server_config"]
    assert drop.args == [["rm", "-f", "--", "/root/chef-server.rb.generated"]]
    assert secrets.args == ["/etc/opscode/private-chef-secrets.json", "chef:server_secrets"]
    assert mkdir.args == [["mkdir", "-p", "--", "/var/opt/opscode/upgrades"]]
    assert level.kwargs == {
        "major": "1",
        "minor": "48",
        "path": "/var/opt/opscode/upgrades/migration-level",
    }
    assert touch.args == [["touch", "--", "/var/opt/opscode/bootstrapped"]]


@pytest.mark.parametrize(("level", "reply"), [(None, AT_LEVEL), (LEVEL, OLD_LEVEL)])
def test_add_frontend_wrong_or_missing_level_changes_nothing(
    frontends: FakeRunner, level: dict[str, int] | None, reply: Reply
) -> None:
    frontends.script[("fe1", "chef_server.migration_level")] = reply
    variables = {**EXAMPLE_VARS["chef/add_frontend"], "level": level}
    result = execute(runbook("chef/add_frontend"), frontends, vars=variables)
    assert {c.fun for c in frontends.calls} == {"chef_server.migration_level"}
    assert result.stopped_at == "check the source frontend's migration level"
    assert f"'minor': {reply.ret['minor']}" in result.steps[0].comment  # shows the real level


# --- chef/rolling_upgrade --------------------------------------------------------------------


@pytest.fixture
def upgrade(runner: FakeRunner) -> FakeRunner:
    for minion in ("fe1", "fe2", "fe3", "fe4"):
        runner.script[(minion, "chef_server.migration_level")] = AT_LEVEL
    return runner


def rolling(runner: FakeRunner, **extra: Any) -> Any:
    variables = {**EXAMPLE_VARS["chef/rolling_upgrade"], **extra}
    return execute(runbook("chef/rolling_upgrade"), runner, vars=variables)


def test_rolling_upgrade_order(upgrade: FakeRunner) -> None:
    result = rolling(upgrade)
    assert result.success
    assert calls(upgrade) == [
        ("chef_server.upgrade", "fe1"),
        ("chef_server.migration_level", "fe1"),
        ("chef_server.set_migration_level", "fe2,fe3"),
        ("chef_server.upgrade", "fe2"),
        ("chef_server.upgrade", "fe3"),
        ("chef_server.migration_level", "fe1,fe2,fe3"),
    ]
    assert only(upgrade, "chef_server.set_migration_level")[0].kwargs == {
        "major": "1",
        "minor": "48",
    }


def test_rolling_upgrade_stops_at_the_first_failed_frontend(upgrade: FakeRunner) -> None:
    upgrade.script[("fe3", "chef_server.upgrade")] = Reply("fail", {"retcode": 1})
    result = rolling(upgrade, others=["fe2", "fe3", "fe4"])
    upgraded = [c.target for c in only(upgrade, "chef_server.upgrade")]
    assert upgraded == ["fe1", "fe2", "fe3"]  # fe4 never upgraded
    step = result.steps[-1]
    assert step.name == "upgrade the other frontends" and step.result is False
    assert "stopped before 1 more minion(s): fe4" in step.comment
    assert result.stopped_at == "upgrade the other frontends"
    assert result.not_started == ["check every frontend is at the same migration level"]


def test_rolling_upgrade_without_level_touches_no_other_frontend(upgrade: FakeRunner) -> None:
    result = rolling(upgrade, level=None)
    assert calls(upgrade) == [
        ("chef_server.upgrade", "fe1"),
        *[("chef_server.migration_level", "fe1")] * (len(upgrade.calls) - 1),
    ]
    assert result.stopped_at == "check the first frontend's migration level"
    assert "'major': 1, 'minor': 48" in result.steps[-1].comment  # the level to pass


def test_rolling_upgrade_skip_first(upgrade: FakeRunner) -> None:
    result = rolling(upgrade, skip_first=True)
    assert result.success and result.steps[0].skipped
    assert [c.target for c in only(upgrade, "chef_server.upgrade")] == ["fe2", "fe3"]


def test_rolling_upgrade_final_check_catches_a_mismatch(upgrade: FakeRunner) -> None:
    upgrade.script[("fe3", "chef_server.migration_level")] = OLD_LEVEL
    result = rolling(upgrade)
    assert result.stopped_at == "check every frontend is at the same migration level"
    assert result.steps[-1].failed.keys() == {"fe3"}


@pytest.mark.parametrize("name", sorted(EXAMPLE_VARS))
def test_the_documented_vars_are_exactly_what_the_runbook_takes(name: str) -> None:
    book = runbook(name)
    assert book.var_problem(EXAMPLE_VARS[name]) is None
    first = book.requires[0]
    without = {k: v for k, v in EXAMPLE_VARS[name].items() if k != first}
    assert book.var_problem(without) == f"runbook {name} needs --var {first}=..."
    problem = book.var_problem({**EXAMPLE_VARS[name], "lvel": 1})
    assert problem is not None and problem.startswith(f"runbook {name} has no var lvel (it takes:")


# --- chef/fence_split_brain ------------------------------------------------------------------


def designates(leader: str | None) -> Reply:
    return Reply("ok", {"leader": leader, "nodes": []})


IN_SYNC = Reply("ok", {"in_sync": True, "role": "follower"})


@pytest.mark.parametrize(("designated", "fenced"), [("be1", "be2"), ("be2", "be1")])
def test_split_brain_fences_the_one_leaderl_does_not_designate(
    runner: FakeRunner, designated: str, fenced: str
) -> None:
    runner.script[("be1", "chef_backend.cluster_status")] = designates(designated)
    runner.script[(fenced, "postgres.replication")] = IN_SYNC
    book = runbook("chef/fence_split_brain")
    result = execute(book, runner, vars=EXAMPLE_VARS["chef/fence_split_brain"])
    assert result.success, [s.comment for s in result.steps]
    assert only(runner, "chef_backend.pgsql_follow") == []  # never the one that wipes first
    [reclone] = only(runner, "chef_backend.reclone")  # beside the fenced node's old copy
    assert reclone.target == fenced
    assert {k: reclone.kwargs[k] for k in ("leader_host", "leader_port", "host", "port")} == {
        "leader_host": f"10.0.0.{designated[-1]}", "leader_port": "5432",
        "host": f"10.0.0.{fenced[-1]}", "port": "5432",
    }  # fmt: skip
    touched = {c.target for c in runner.calls if c.fun != "chef_backend.cluster_status"}
    assert touched == {fenced}, "the designated leader is never touched"
    [synced] = only(runner, "postgres.replication")
    assert synced.target == fenced and synced.kwargs["host"] == f"10.0.0.{fenced[-1]}"


def test_split_brain_touches_nothing_when_leaderl_designates_neither(runner: FakeRunner) -> None:
    runner.script[("be1", "chef_backend.cluster_status")] = designates(None)
    book = runbook("chef/fence_split_brain")
    result = execute(book, runner, vars=EXAMPLE_VARS["chef/fence_split_brain"])
    assert not result.success and result.stopped_at == "designated"
    assert {c.fun for c in runner.calls} == {"chef_backend.cluster_status"}
    assert "condition false" in result.steps[0].comment


# --- chef/heal_follower ------------------------------------------------------------------------

FOLLOWER = {"node": "be3", "host": "10.0.0.3", "port": "5432", "leader": "be1"}
FOLLOWER |= {"leader_host": "10.0.0.1", "leader_port": "5432", "down": True}
BEHIND = Reply("ok", {"in_sync": False, "role": "follower"})


def leader_answers(runner: FakeRunner, answers: list[str]) -> list[str]:
    """be3 asked about itself: behind; about the leader (10.0.0.1): the next of ``answers``
    (the last one repeated). Returns the hosts asked, in order."""
    asked: list[str] = []

    def reply(minion: str, fun: str) -> Reply:
        host = str(runner.calls[-1].kwargs.get("host"))
        asked.append(host)
        if host != "10.0.0.1":
            return BEHIND
        role = answers.pop(0) if len(answers) > 1 else answers[0]
        return Reply("ok", {"role": role})

    runner.reply = reply  # type: ignore[method-assign]
    return asked


def test_the_ladder_acts_only_while_the_leader_named_leads(runner: FakeRunner) -> None:
    asked = leader_answers(runner, ["leader"])
    result = execute(runbook("chef/heal_follower"), runner, vars=FOLLOWER)
    assert not result.success  # the fake follower never catches up
    assert asked[0] == "10.0.0.1"  # before anything else, whether the leader leads
    assert {c.target for c in runner.calls} == {"be3"}  # every step targets the follower
    assert [c.kwargs for c in only(runner, "chef_backend.pgsql_follow")] == [{"leader": "be1"}]
    [reclone] = only(runner, "chef_backend.reclone")  # then re-cloned beside the old copy
    assert (reclone.kwargs["leader_host"], reclone.kwargs["host"]) == ("10.0.0.1", "10.0.0.3")


def test_a_leader_that_does_not_lead_stops_the_ladder_before_any_rung(
    runner: FakeRunner,
) -> None:
    """A follower out of sync because its leader died is in a failover: leaderl may be
    promoting it this very moment. Nothing is restarted, re-pointed or wiped."""
    leader_answers(runner, ["follower"])  # the old leader, gone or demoted
    result = execute(runbook("chef/heal_follower"), runner, vars={**FOLLOWER, "down": False})
    assert not result.success and result.stopped_at == "the leader leads"
    assert {c.fun for c in runner.calls} == {"postgres.replication"}  # it only asked
    assert "ret.role == 'leader'" in result.steps[0].comment


def test_a_leader_that_stops_leading_mid_ladder_is_never_re_pointed_at(
    runner: FakeRunner,
) -> None:
    asked = leader_answers(runner, ["leader", "follower"])  # leads at first, then fails
    result = execute(runbook("chef/heal_follower"), runner, vars=FOLLOWER)
    assert not result.success
    assert asked.count("10.0.0.1") >= 2  # asked again before re-pointing
    assert only(runner, "chef_backend.pgsql_follow") == []  # neither re-followed
    assert only(runner, "chef_backend.reclone") == []  # nor re-cloned
    assert next(s for s in result.steps if s.name == "the leader still leads").result is False
    assert next(s for s in result.steps if s.name == "re-clone from a base backup").skipped


def test_a_follower_promoted_meanwhile_is_left_alone(runner: FakeRunner) -> None:
    """In a failover, the follower being healed may be the one leaderl promotes: no rung
    restarts or re-points the new leader."""
    runner.script[("be3", "postgres.replication")] = Reply(
        "ok", {"in_sync": False, "role": "leader"}
    )
    vars = {**FOLLOWER, "down": False}
    result = execute(runbook("chef/heal_follower"), runner, vars=vars)
    assert result.success
    assert {c.fun for c in runner.calls} == {"postgres.replication"}  # it only looked
