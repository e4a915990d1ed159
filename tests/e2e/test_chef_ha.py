"""The Chef HA formula on the lab: real PostgreSQL, etcd, minions and master; faults heal.

One lab for the whole module (tests run in file order and leave it healthy); the last
test makes a fix that does not hold and expects an escalation.
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from saline.lab.chefha import faults, health, pg
from saline.lab.chefha.cluster import ChefLab, lab_record
from saline.lab.chefha.state import BACKENDS, ChefLabError
from tests.e2e.healing import Writer, events, last_seq, reactions, saline, trail, wait_event
from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)


def record(chef: ChefLab) -> dict[str, Any]:
    return lab_record(chef.directory)


def roles(chef: ChefLab) -> dict[str, str]:
    return health.pg_roles(record(chef))


def all_synced(chef: ChefLab) -> bool:
    return roles(chef) == {"be1": "leader", "be2": "synced", "be3": "synced"}


# --- the lab itself -----------------------------------------------------------------------


def test_lab_status_lists_nodes_services_ports_and_live_pids(chef: ChefLab) -> None:
    proc = saline(chef, "lab", "status", "--dir", str(chef.directory), "--out", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    nodes = report["nodes"]
    assert {n: nodes[n]["address"] for n in nodes} == {
        "be1": "127.0.1.1", "be2": "127.0.1.2", "be3": "127.0.1.3",
        "fe1": "127.0.1.4", "fe2": "127.0.1.5",
    }  # fmt: skip
    for name in BACKENDS:
        services = nodes[name]["services"]
        assert {"postgresql", "etcd", "elasticsearch"} <= set(services)
        assert services["postgresql"]["port"] == 5432
        for svc in services.values():
            assert svc["running"], (name, svc)
            assert Path(f"/proc/{svc['pid']}").exists()
        pg_owner = Path(f"/proc/{services['postgresql']['pid']}").stat().st_uid
        assert os.geteuid() != 0 or pg_owner != 0, "PostgreSQL must not run as root"
    assert all(nodes[n]["minion"]["online"] for n in nodes)
    assert all_synced(chef)


def test_a_second_lab_on_the_same_addresses_is_refused_before_touching_anything(
    chef: ChefLab,
) -> None:
    other = Path(tempfile.mkdtemp(prefix="saline-chefha-second-"))
    try:
        with pytest.raises(ChefLabError, match=r"127\.0\.1\.1:5432 is in use"):
            ChefLab(other).up()
        assert not (other / "nodes").exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)
    assert all_synced(chef)  # the running lab did not notice


def test_chef_backend_status_through_a_job_reads_the_real_cluster(chef: ChefLab) -> None:
    proc = saline(chef, "run", "be2", "chef_backend.status", "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(proc.stdout)["returns"]["be2"]["return"]
    assert status["healthy"], status["problems"]
    assert status["services"]["postgresql"]["distributed"] == {
        "leader": 1, "offline": 0, "syncing": 0, "synced": 2,
    }  # fmt: skip


def test_the_formulas_states_converge_on_the_lab(chef: ChefLab) -> None:
    """Highstate in test mode changes nothing; applied, it converges; again: no changes."""
    root = Path(record(chef)["nodes"]["be1"]["root"])
    rules_v4 = root / "etc/iptables/rules.v4"
    before = rules_v4.exists()
    proc = saline(chef, "state", "apply", "*", "--test", "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rules_v4.exists() == before, "test mode wrote a file"
    proc = saline(chef, "state", "apply", "*", "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = rules_v4.read_text()
    for member in ("127.0.1.1", "127.0.1.4", "127.0.1.5"):
        assert member in rules
    assert "5432" in rules and "9200:9400" in rules
    again = json.loads(saline(chef, "state", "apply", "*", "--out", "json").stdout)
    assert set(again["returns"]) == {"be1", "be2", "be3", "fe1", "fe2"}
    for minion, ret in again["returns"].items():
        assert ret["success"] and ret["return"], minion
        changed = [chunk["id"] for chunk in ret["return"] if chunk["changes"]]
        assert changed == [], (minion, changed)


# --- PostgreSQL followers -----------------------------------------------------------------

FOLLOWER_FAULTS = [
    ("pg-pause-replay", "be2", "postgres.resume_replay"),
    ("pg-break-upstream", "be3", "chef_backend.pgsql_follow"),
    ("pg-stop", "be2", "chef_backend.restart"),
    ("pg-wal-gone", "be3", "chef_backend.reclone"),
]


@pytest.mark.parametrize(("kind", "node", "fix"), FOLLOWER_FAULTS)
def test_follower_fault_heals_while_the_leader_stays_writable(
    chef: ChefLab, kind: str, node: str, fix: str
) -> None:
    wait_for(lambda: all_synced(chef), 30, "all followers in sync before the fault")
    since = last_seq(chef)
    table = f"w_{kind.replace('-', '_')}"
    with Writer(chef, table) as writer:
        faults.inject(chef.directory, kind, node)
        wait_event(chef, since, f"saline/beacon/{node}/pg_replication/[do]*", 30)
        wait_event(chef, since, f"saline/beacon/{node}/pg_replication/in_sync", 120)
        healed = len(writer.committed)
        wait_for(lambda: len(writer.committed) > healed + 50, 10, "50 more writes after the heal")
    assert writer.errors == []
    assert writer.rows_on("be1") == set(writer.committed), "a committed row was lost"
    rule = "chef-pg-follower-down" if kind == "pg-stop" else "chef-pg-follower-out-of-sync"
    if kind == "pg-wal-gone":  # the fault stops the follower first: either rule may see it
        rule = _rule_that_fired(chef, since)
    # the ladder's end, not the beacon's first in_sync: a restarted follower may stream for
    # a moment before it finds its WAL gone, and the re-clone rung is still to come
    reaction, jobs = trail(chef, rule, since)
    wait_for(lambda: caught_up(writer, node), 30, f"{node} to catch up")
    assert reaction["outcome"] == "ok", reaction
    assert f"/{node}/pg_replication/" in reaction["event_tag"]
    ran = [job["data"]["fun"] for job in jobs]
    assert fix in ran, ran
    assert {job["minion"] for job in jobs} == {node}, "the ladder touched another node"
    if fix == "chef_backend.reclone":  # beside the old copy, removed once the new one streamed
        [done] = [j for j in jobs if j["data"]["fun"] == fix]
        assert done["data"]["success"], done
        data_dir = Path(record(chef)["nodes"][node]["services"]["postgresql"]["data_dir"])
        assert (data_dir / "PG_VERSION").exists()
        assert sorted(p.name for p in data_dir.parent.glob(f"{data_dir.name}.saline-*")) == []
        assert "chef_backend.pgsql_follow" in ran  # the re-follow rung came first, and failed


def test_a_follower_that_believes_it_streams_is_caught_by_the_leaders_view(
    chef: ChefLab,
) -> None:
    """The leader's WAL sender for be2 stalls: be2's receiver still says streaming and
    nothing lags behind what it received. The beacon asks the leader too, whose view sees
    be2's replies stop: out of sync, seen by the leader's view alone; healed, no row lost."""
    wait_for(lambda: all_synced(chef), 30, "all followers in sync before the fault")
    forgot = saline(chef, "reactor", "forget", "--rule", "chef-pg-follower-out-of-sync",
                    "--key", "be2")  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    since = last_seq(chef)
    with Writer(chef, "w_stall") as writer:
        said = faults.inject(chef.directory, "pg-stall-sender", "be2")
        assert "be2 believes it streams" in said
        seen = wait_event(chef, since, "saline/beacon/be2/pg_replication/out_of_sync", 30)
        reaction, jobs = trail(chef, "chef-pg-follower-out-of-sync", since)
        wait_for(lambda: caught_up(writer, "be2"), 60, "be2 to catch up")
    data = seen["data"]
    assert data["seen_by"] == ["leader"], data
    assert data["views"]["follower"]["problems"] == []  # be2's own view: all is well
    assert data["receiver_status"] == "streaming"
    [problem] = data["views"]["leader"]["problems"]
    assert problem.startswith("The leader has heard nothing from this follower for "), problem
    assert data["limits"]["max_reply_age"] == 4
    assert reaction["outcome"] == "ok", reaction
    assert {job["minion"] for job in jobs} == {"be2"}, "the ladder touched another node"
    assert writer.errors == []
    assert writer.rows_on("be1") == set(writer.committed), "a committed row was lost"
    print(f"writer: {len(writer.committed)} rows committed, none lost")


def caught_up(writer: Writer, node: str) -> bool:
    """``node`` holds every committed row (False while its PostgreSQL does not answer)."""
    try:
        return writer.rows_on(node) == set(writer.committed)
    except psycopg2.Error:
        return False


def _rule_that_fired(chef: ChefLab, since: int) -> str:
    fired = events(chef, since, "saline/reactor/chef-pg-follower-*/fired")
    assert fired, "no follower rule fired"
    return str(fired[0]["tag"].split("/")[2])


def test_a_split_brain_fences_the_undesignated_leader_and_never_touches_the_other(
    chef: ChefLab,
) -> None:
    wait_for(lambda: all_synced(chef), 30, "all followers in sync before the fault")
    since = last_seq(chef)
    with Writer(chef, "w_split_brain") as writer:
        faults.inject(chef.directory, "pg-promote", "be2")  # be1 is the designated leader
        wait_event(chef, since, "saline/beacon/be2/pg_replication/leader", 30)
        reaction, jobs = trail(chef, "chef-pg-split-brain", since)
        wait_for(lambda: all_synced(chef), 60, "be2 a follower of be1 again")
        healed = len(writer.committed)
        wait_for(lambda: len(writer.committed) > healed + 50, 10, "50 more writes after it")
    assert reaction["outcome"] == "ok", reaction
    assert "be2/pg_replication/leader" in reaction["event_tag"]
    disruptive = [j for j in jobs if j["data"]["fun"] == "chef_backend.reclone"]
    assert [j["minion"] for j in disruptive] == ["be2"], jobs  # beside its old copy
    touched_be1 = {j["data"]["fun"] for j in jobs if j["minion"] == "be1"}
    assert touched_be1 <= {"chef_backend.cluster_status"}, "the designated leader was touched"
    assert writer.errors == []  # the designated leader stayed writable throughout
    assert writer.rows_on("be1") == set(writer.committed), "a committed row was lost"
    wait_for(lambda: caught_up(writer, "be2"), 30, "be2 to catch up")
    log = Path(record(chef)["nodes"]["be2"]["root"], "var/log/chef-backend/ctl.log")
    last = [line.split(" ", 1)[1] for line in log.read_text().splitlines()[-2:]]
    assert last == ["stop postgresql", "start postgresql"]  # the swap, no wiping pgsql-follow


def test_two_followers_down_heal_one_after_the_other(chef: ChefLab) -> None:
    wait_for(lambda: all_synced(chef), 30, "all followers in sync")
    # earlier heals of these nodes must not answer for this test with their cooldowns
    forgot = saline(chef, "reactor", "forget", "--rule", "chef-pg-follower-down")
    assert forgot.returncode == 0, forgot.stderr
    since = last_seq(chef)
    for node in ("be2", "be3"):
        faults.inject(chef.directory, "pg-stop", node)
    for node in ("be2", "be3"):
        wait_event(chef, since, f"saline/beacon/{node}/pg_replication/in_sync", 120)
    done = [
        r
        for r in reactions(chef, "chef-pg-follower-down")
        if r["verdict"] == "fire" and r["event_seq"] > since
    ]
    assert len(done) == 2, done
    first, second = sorted(done, key=lambda r: r["created"])
    assert {first["key"], second["key"]} == {"be2", "be3"}
    assert first["finished"] <= second["created"], "two followers were healed at once"
    # whatever the other node's beacon said while the first heal ran was held back by the
    # group guard (how many times depends on how long that heal took)
    meanwhile = [
        r
        for r in reactions(chef, "chef-pg-follower-down")
        if r["key"] == second["key"] and first["created"] < r["created"] < first["finished"]
    ]
    assert all(r["verdict"] == "skip" and "in flight" in r["reason"] for r in meanwhile), meanwhile


# --- etcd and Elasticsearch ---------------------------------------------------------------


def test_killed_etcd_member_is_restarted_and_quorum_kept(chef: ChefLab) -> None:
    since = last_seq(chef)
    faults.inject(chef.directory, "etcd-kill", "be2")
    wait_event(chef, since, "saline/beacon/be2/etcd_member/[dn]*", 30)
    wait_event(chef, since, "saline/beacon/be2/etcd_member/healthy", 60)
    reaction, jobs = trail(chef, "chef-etcd-member-unhealthy", since)
    assert reaction["outcome"] == "ok"
    assert [j["data"]["fun"] for j in jobs] == ["chef_backend.restart"]
    data = record(chef)
    wait_for(
        lambda: all(health.etcd_healthy(data["nodes"][b]["services"]["etcd"]) for b in BACKENDS),
        15,
        "all three etcd members healthy",
    )


@pytest.mark.parametrize(
    ("kind", "node", "fix"),
    [
        ("es-yellow", "be1", "elasticsearch.reroute_retry_failed"),
        ("es-red", "be2", "elasticsearch.reroute_retry_failed"),
        ("es-stop", "be3", "chef_backend.restart"),
    ],
)
def test_elasticsearch_fault_heals_to_green(chef: ChefLab, kind: str, node: str, fix: str) -> None:
    since = last_seq(chef)
    faults.inject(chef.directory, kind, node)
    bad = {"es-yellow": "yellow", "es-red": "red", "es-stop": "down"}[kind]
    wait_event(chef, since, f"saline/beacon/{node}/elasticsearch_health/{bad}", 30)
    wait_event(chef, since, f"saline/beacon/{node}/elasticsearch_health/green", 60)
    rule = "chef-es-service-down" if kind == "es-stop" else "chef-es-unhealthy"
    reaction, jobs = trail(chef, rule, since)
    assert reaction["outcome"] == "ok"
    assert fix in [j["data"]["fun"] for j in jobs]


# --- frontends and backend files -----------------------------------------------------------


def level_of(chef: ChefLab, node: str) -> Any:
    path = Path(record(chef)["nodes"][node]["root"], "var/opt/opscode/upgrades/migration-level")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def reconfigures(chef: ChefLab, node: str) -> int:
    log = Path(record(chef)["nodes"][node]["root"], "var/log/opscode/reconfigure.log")
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize(("kind", "node", "other"), [
    ("migration-drift", "fe2", "fe1"),
    ("migration-missing", "fe1", "fe2"),
])  # fmt: skip
def test_migration_level_drift_is_copied_and_reconfigured(
    chef: ChefLab, kind: str, node: str, other: str
) -> None:
    reference = level_of(chef, other)
    runs = reconfigures(chef, node)
    since = last_seq(chef)
    faults.inject(chef.directory, kind, node)
    reaction, jobs = trail(chef, "chef-migration-level-drift", since)
    assert reaction["outcome"] == "ok", reaction
    assert level_of(chef, node) == reference
    assert reconfigures(chef, node) == runs + 1
    assert reconfigures(chef, other) == runs_before(chef, other, jobs)
    assert {j["minion"] for j in jobs} == {node}


def runs_before(chef: ChefLab, other: str, jobs: list[dict[str, Any]]) -> int:
    """The other frontend was never reconfigured by this reaction (no job targeted it)."""
    assert all(j["minion"] != other for j in jobs)
    return reconfigures(chef, other)


def test_a_frontend_service_down_is_restarted_on_that_frontend_only(chef: ChefLab) -> None:
    since = last_seq(chef)
    said = faults.inject(chef.directory, "fe-service-down", "fe2")
    assert "opscode-erchef is down on fe2" in said
    seen = wait_event(chef, since, "saline/beacon/fe2/chef_server_status/down", 30)
    assert seen["data"]["service"] == "opscode-erchef" and seen["data"]["normally_up"] is True
    reaction, jobs = trail(chef, "chef-frontend-service-down", since)
    assert reaction["outcome"] == "ok", reaction
    assert [(j["minion"], j["data"]["fun"]) for j in jobs] == [("fe2", "chef_server.restart")]
    wait_event(chef, since, "saline/beacon/fe2/chef_server_status/ok", 30)
    log = Path(record(chef)["nodes"]["fe2"]["root"], "var/log/opscode/services.log")
    assert log.read_text().splitlines()[-1].split(" ", 1)[1] == "restart opscode-erchef"


def test_md5_auth_drift_reapplies_the_backend_state_and_reconfigures(chef: ChefLab) -> None:
    node = record(chef)["nodes"]["be3"]
    rb = Path(node["root"], "etc/chef-backend/chef-backend.rb")
    since = last_seq(chef)
    faults.inject(chef.directory, "md5-auth", "be3")
    wait_event(chef, since, "saline/beacon/be3/config_drift/drifted", 30)
    wait_event(chef, since, "saline/beacon/be3/config_drift/ok", 60)
    reaction, jobs = trail(chef, "chef-backend-config-drift", since)
    assert reaction["outcome"] == "ok"
    assert [j["data"]["fun"] for j in jobs] == ["state.apply"]
    assert "10.99.0.0/16" not in rb.read_text()
    hba = Path(node["services"]["postgresql"]["data_dir"], "pg_hba.conf").read_text()
    assert "10.99.0.0/16" not in hba and "127.0.1.0/24" in hba
    ctl_log = Path(node["root"], "var/log/chef-backend/ctl.log").read_text()
    assert "reconfigure" in ctl_log.splitlines()[-1]


def test_secrets_file_mode_is_restored(chef: ChefLab) -> None:
    secrets = Path(record(chef)["nodes"]["be2"]["root"], "etc/chef-backend/secrets.json")
    since = last_seq(chef)
    faults.inject(chef.directory, "secrets-mode", "be2")
    reaction, _ = trail(chef, "chef-backend-secrets-mode", since)
    assert reaction["outcome"] == "ok"
    assert secrets.stat().st_mode & 0o777 == 0o640


def test_clock_drift_escalates_and_touches_no_clock(chef: ChefLab) -> None:
    since = last_seq(chef)
    skew = Path(record(chef)["nodes"]["be2"]["services"]["ntp"]["skew_file"])
    faults.inject(chef.directory, "clock-drift", "be2")
    try:
        told = wait_event(chef, since, "saline/reactor/chef-clock-drift/escalated", 30)
        assert "saline never steps a database node's clock" in told["data"]["reason"]
        jobs = [e for e in events(chef, since, "saline/job/*") if e["rule"] == "chef-clock-drift"]
        assert jobs == []
    finally:
        skew.write_text("0\n")
    wait_event(chef, since, "saline/beacon/be2/time_drift/ok", 30)


def test_rolling_frontend_upgrade_runbook(chef: ChefLab) -> None:
    target = record(chef)["target_level"]
    level = json.dumps(target)
    proc = saline(
        chef, "orchestrate", "chef/rolling_upgrade",
        "--var", "first=fe1", "--var", "others=fe2", "--var", f"level={level}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert level_of(chef, "fe1") == target
    assert level_of(chef, "fe2") == target
    for node in ("fe1", "fe2"):
        log = Path(record(chef)["nodes"][node]["root"], "var/log/opscode/reconfigure.log")
        assert "upgrade level=" in log.read_text()


def test_lab_demo_heals_every_headline_fault(chef: ChefLab) -> None:
    # the demo is a fresh night: earlier tests' firings must not spend its flap budgets
    for rule in ("chef-pg-follower-out-of-sync", "chef-pg-follower-down"):
        forgot = saline(chef, "reactor", "forget", "--rule", rule)
        assert forgot.returncode == 0, forgot.stderr
    proc = saline(chef, "lab", "demo", "--dir", str(chef.directory), "--keep", "--out", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["fault"].split()[0] for r in rows] == [
        "pg-pause-replay", "pg-wal-gone", "pg-stop", "pg-stall-sender", "etcd-kill", "es-red",
        "migration-drift", "md5-auth", "secrets-mode", "fe-service-down",
    ]  # fmt: skip
    for row in rows:
        assert row["healed"].startswith("+"), row
        assert row["rule"].startswith("chef-"), row
        # a stalled sender: PostgreSQL's own receiver timeout (the lab's 10 s) may reconnect
        # it while the ladder's first probe watches, before any rung acts
        assert row["ran"] != "-" or row["fault"] == "pg-stall-sender be3", row
    assert "detected" in proc.stderr  # the live timeline goes to stderr with --out json
    rehearse_every_recording(chef, len(rows))


def rehearse_every_recording(chef: ChefLab, scenarios: int) -> None:
    """Each scenario's recording, replayed by ``saline reactor simulate``, decides as the
    reactor did: every decision the reactor made on a recorded event is simulated, the
    same verdict."""
    recordings = sorted((chef.directory / "recordings").glob("*.events.jsonl"))
    assert len(recordings) == scenarios, recordings
    for events_file in recordings:
        view = events_file.with_name(events_file.name.replace(".events.jsonl", ".view.json"))
        proc = saline(chef, "reactor", "simulate", str(events_file), "--view", str(view),
                      "--out", "json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        simulated = json.loads(proc.stdout)["decisions"]
        recorded = [json.loads(line) for line in events_file.read_text().splitlines()]
        seqs = {str(e["seq"]) for e in recorded}
        real = {
            (e["data"]["event_id"], e["data"]["rule"])
            for e in recorded
            if e["tag"].startswith("saline/reactor/")
            and "verdict" in e["data"]
            and e["data"]["event_id"] in seqs
            and e["cause"] is not None
        }
        compared = {(str(d["seq"]), d["rule"]) for d in simulated if d["real"] is not None}
        assert real and real <= compared, (events_file.name, real - compared)
        differing = [d for d in simulated if d["differs"]]
        assert differing == [], (events_file.name, differing)
        fired = [d for d in simulated if d["verdict"] == "fire" and d["real"] is not None]
        assert fired, events_file.name  # each scenario's heal was a fired rule


# --- last: a fix that does not hold ----------------------------------------------------------


def test_a_fix_that_does_not_hold_escalates_instead_of_looping(chef: ChefLab) -> None:
    wait_for(lambda: all_synced(chef), 30, "all followers in sync")
    data = record(chef)
    node = data["nodes"]["be3"]
    svc, password = node["services"]["postgresql"], data["secrets"]["password"]
    stop = threading.Event()

    def keep_pausing() -> None:  # whatever the ladder resumes is paused again
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the ladder may be restarting it
                pg.query(node["address"], svc, password, "SELECT pg_wal_replay_pause()")
            stop.wait(0.2)

    # its own budget: earlier tests' firings for be3 must not answer for this one
    forgot = saline(chef, "reactor", "forget", "--rule", "chef-pg-follower-out-of-sync",
                    "--key", "be3")  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    since = last_seq(chef)
    pauser = threading.Thread(target=keep_pausing, daemon=True)
    with Writer(chef, "w_sticky"):
        pauser.start()
        try:
            escalated = wait_event(
                chef, since, "saline/reactor/chef-pg-follower-out-of-sync/escalated", 200
            )
        finally:
            stop.set()
            pauser.join(5)
    assert escalated["data"]["key"] == "be3"
    assert escalated["data"]["reason"].startswith("flapping: 3 firings for key 'be3'")
    assert "; the last fix (" in escalated["data"]["reason"]  # and what its ladder found
    fired = [
        r
        for r in reactions(chef, "chef-pg-follower-out-of-sync")
        if r["verdict"] == "fire" and r["key"] == "be3" and r["event_seq"] > since
    ]
    assert len(fired) == 3, "fired until its flap budget was spent, then escalated"
    pg.query(node["address"], svc, password, "SELECT pg_wal_replay_resume()")


# --- the very last: the leader fails (the lab does not get its first leader back) ----------


def test_a_failed_leader_is_leaderls_and_saline_re_points_the_follower_left_behind(
    chef: ChefLab,
) -> None:
    wait_for(lambda: all_synced(chef), 30, "all followers in sync")

    def quiet() -> bool:  # earlier tests' reactions have ended: every job below is ours
        state = json.loads(saline(chef, "status", "--out", "json").stdout)["reactor"]
        return not state["in_flight"]

    wait_for(quiet, 120, "no reaction in flight")
    for rule in ("chef-pg-follower-out-of-sync", "chef-pg-follower-down"):
        forgot = saline(chef, "reactor", "forget", "--rule", rule)  # earlier tests' budgets
        assert forgot.returncode == 0, forgot.stderr
    logs = {
        b: Path(record(chef)["nodes"][b]["root"], "var/log/chef-backend/ctl.log")
        for b in ("be2", "be3")
    }
    before = {
        b: len(log.read_text().splitlines()) if log.exists() else 0 for b, log in logs.items()
    }
    since = last_seq(chef)
    said = faults.inject(chef.directory, "pg-leader-kill", "be1")
    new = record(chef)["leader"]
    [left] = [b for b in ("be2", "be3") if b != new]
    assert f"promoted {new}" in said
    wait_event(chef, since, f"saline/beacon/{new}/pg_replication/leader", 30)
    # chef-backend did not re-point the other follower: saline's ladder does, against the
    # backend that leads now; a ladder started in the moment before (naming the dead
    # leader) finds it does not lead and stops without touching the follower's data
    wait_for(lambda: roles(chef)[left] == "synced", 120, f"{left} following {new}")
    rule = _rule_that_fired(chef, since)
    wait_for(
        lambda: [
            r
            for r in reactions(chef, rule)
            if r["verdict"] == "fire" and (r["event_seq"] or 0) > since and r["outcome"] == "ok"
        ],
        60,
        "the reaction that re-pointed it",
    )
    done = logs[left].read_text().splitlines()[before[left] :]
    assert any(f"pgsql-follow {new} force=" in line for line in done), done
    assert not any("pgsql-follow be1" in line for line in done), "re-pointed at the dead leader"
    acting = {"chef_backend.pgsql_follow", "chef_backend.restart", "postgres.resume_replay"}
    jobs = [e for e in events(chef, since, "saline/job/*/ret/*") if e.get("rule")]
    acted = [(e["minion"], e["data"]["fun"], e["rule"]) for e in jobs if e["data"]["fun"] in acting]
    assert {minion for minion, _, _ in acted} == {left}, acted
    # a leader exists: no "no leader" escalation; the failed leader is leaderl's, untouched
    assert events(chef, since, "saline/reactor/chef-pg-no-leader/escalated") == []
    assert not [e for e in jobs if e["minion"] == "be1" and e["data"]["fun"] in acting]
