"""An accepted minion turned hostile: event data, grains and returns that cannot be stored.

Each probe is sent by a real CURVE DEALER holding an accepted key to a real lab master; the
master must acknowledge what a resend would not improve, refuse and count it, and go on
serving the lab's minions.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from saline.codec import pack
from saline.keys import KeyRing, KeyState, read_keypair
from saline.lab.lab import Lab
from saline.protocol import (
    MINION_KINDS,
    Ack,
    FileReply,
    FileRequest,
    Hello,
    Pending,
    PillarReply,
    PillarRequest,
    Refused,
    Welcome,
)
from tests.integration.peers import (
    MakeDealer,
    assert_lab_serves,
    key_in_ring,
    refusals,
    wait_counted,
)
from tests.support import events, run_json, saline, status, wait_for


def _frame(fields: dict[str, Any], raw_field: str, raw: bytes) -> bytes:
    """A protocol map whose ``raw_field`` is the msgpack ``raw`` bytes, spliced in as is (so
    it may nest deeper than msgpack's own packer allows)."""
    packer = msgpack.Packer(use_bin_type=True)
    out = packer.pack_map_header(len(fields) + 1)
    for key, value in fields.items():
        out += packer.pack(key) + packer.pack(value)
    return out + packer.pack(raw_field) + raw


#: a frame msgpack never accepts (0xc1 is reserved): refused as malformed at once
SENTINEL_FRAME = b"\xc1sentinel"


def _event(minion_id: str, eid: str, data_raw: bytes) -> bytes:
    tag = f"saline/beacon/{minion_id}/pg_replication/out_of_sync"  # a shipped rule's tag
    fields = {"v": 1, "kind": "event", "id": minion_id, "eid": eid, "tag": tag}
    return _frame(fields, "data", data_raw)


def _map(key: str, raw: bytes) -> bytes:
    return msgpack.packb({key: 0})[:-1] + raw  # fixmap, key, then the raw value


#: event data the store or the reactor cannot take, as raw msgpack
HOSTILE: dict[str, bytes] = {
    "non-UTF-8 bin": pack({"lag": b"\xff\xfe\xfd"}),
    "ext type": pack({"lag": msgpack.ExtType(42, b"x")}),
    "timestamp": pack({"lag": msgpack.Timestamp(1_700_000_000, 5)}),
    "list 1,000 deep": _map("lag", b"\x91" * 1000 + b"\xc0"),
    "over max_event_bytes": pack({"lag": "x" * (70 * 1024)}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_event_data_that_cannot_be_stored_is_acknowledged_refused_and_announced(
    lab: Lab, dealer: MakeDealer, name: str
) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        before = refusals(lab)
        seq = max((e["seq"] for e in events(lab)), default=0)
        eids = [f"bad-{i}" for i in range(3)]
        for eid in eids:
            d.send(_event(own_id, eid, HOSTILE[name]))
        acked: list[str] = []
        wait_for(
            lambda: (
                acked.extend(a for m in d.waiting() if isinstance(m, Ack) for a in m.events)
                or len(acked) >= 3
            ),
            10,
            "acks of the three bad events",
        )
        assert sorted(acked) == eids  # a resend would not be any better: not resent forever
        wait_counted(lab, "bad_event", before, 3)
        assert lab.running()["master"], f"the master died of an event with {name}"
        stored = events(lab, since=seq)
        announced = [e for e in stored if e["tag"] == f"saline/minion/{own_id}/refused"]
        assert len(announced) == 1, stored  # one announcement per flood, not per event
        assert announced[0]["data"]["reason"] == "bad_event"
        assert announced[0]["data"]["problem"]
        assert not [e for e in stored if e["tag"].endswith("/pg_replication/out_of_sync")]
    assert_lab_serves(lab)


def test_hello_with_grains_that_are_not_json_is_refused_with_the_path(
    lab: Lab, dealer: MakeDealer
) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        before = refusals(lab)
        fields = {"v": 1, "kind": "hello", "id": own_id, "version": "x"}
        d.send(_frame(fields, "grains", pack({"os": {"kernel": b"\xff"}})))
        reply = d.recv()
        assert isinstance(reply, Refused)
        assert reply.reason == "bad_grains: grains.os.kernel: bytes is not a JSON value"
        wait_counted(lab, "bad_grains", before)
        assert own_id not in status(lab)["online"]
        d.send(Hello(id=own_id, grains={"os": "Debian"}))  # the same key, good grains: welcome
        assert d.recv().model_dump()["kind"] == "welcome"
    assert_lab_serves(lab)


def _job_for(lab: Lab, minion_id: str, fun: str = "test.ping") -> str:
    """A job targeting ``minion_id``, for a return to answer."""
    _, doc = run_json(lab, "-T", "list", minion_id, fun, "--timeout", "1")
    assert minion_id in [*doc["missing"], *doc["returns"]], doc
    jid: str = doc["jid"]
    return jid


def _return(minion_id: str, jid: str, ret_raw: bytes, fun: str = "test.ping") -> bytes:
    fields = {"v": 1, "kind": "return", "jid": jid, "id": minion_id, "fun": fun}
    return _frame({**fields, "success": True, "retcode": 0}, "ret", ret_raw)


def test_return_that_cannot_be_stored_is_kept_as_a_failure_that_says_why(
    lab: Lab, dealer: MakeDealer
) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        jid = _job_for(lab, own_id)
        before = refusals(lab)
        d.send(_return(own_id, jid, b"\x91" * 1000 + b"\xc0"))
        assert d.recv() == Ack(jids=[jid])
        wait_counted(lab, "bad_return", before)
        _, shown = _job_show(lab, jid)
        ret = shown["returns"][own_id]
        assert ret["success"] is False
        assert ret["return"]["error"] == "bad_return"
        assert "nested deeper than 32 levels" in ret["return"]["message"]
    assert_lab_serves(lab)


def _job_show(lab: Lab, jid: str) -> tuple[int, dict[str, Any]]:
    proc = saline(lab, "jobs", "show", jid, "--out", "json")
    return proc.returncode, json.loads(proc.stdout)


def test_returns_are_taken_only_from_minions_the_job_targeted(lab: Lab, dealer: MakeDealer) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        other_jid = _job_for(lab, "be1")  # a real job, not sent to this key's minion
        before = refusals(lab)
        seq = max((e["seq"] for e in events(lab)), default=0)
        for jid in (other_jid, "20990101000000000000"):
            d.send(_return(own_id, jid, pack(True)))
            assert d.recv() == Ack(jids=[jid])  # acknowledged, so never resent...
        wait_counted(lab, "return_not_targeted", before, 2)
        _, shown = _job_show(lab, other_jid)
        assert own_id not in shown["returns"]  # ...and never stored
        assert not [e for e in events(lab, since=seq) if e["tag"].endswith(f"/ret/{own_id}")]
        # a jid that could escape a tag or a path is refused before anything looks at it
        d.send(_return(own_id, "../x", pack(True)))
        reply = d.recv()
        assert isinstance(reply, Refused) and reply.reason.startswith("invalid: return.jid")
    assert_lab_serves(lab)


def test_a_forged_state_return_on_another_job_fires_no_drift(lab: Lab, dealer: MakeDealer) -> None:
    """The drift event is judged on the job's function, not on what the return claims."""
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret)
        jid = _job_for(lab, own_id, "test.ping")
        seq = max((e["seq"] for e in events(lab)), default=0)
        forged = [{"state": "file", "name": "/etc/x", "result": True, "changes": {"a": 1}}]
        d.send(_return(own_id, jid, pack(forged), fun="state.apply"))
        assert d.recv() == Ack(jids=[jid])
        wait_for(
            lambda: [e for e in events(lab, since=seq) if e["tag"].endswith(f"/ret/{own_id}")],
            10,
            "the return event",
        )
        [ret] = [e for e in events(lab, since=seq) if e["tag"].endswith(f"/ret/{own_id}")]
        assert ret["data"]["fun"] == "test.ping"
        assert not [e for e in events(lab, since=seq) if e["tag"].endswith("/drift")]
    assert_lab_serves(lab)


# -- no exception in a rule or a store write ends the master -----------------------------

_RAISING_RULE = """
- name: hardening-probe
  on: test/hardening/probe
  # str.index raises ValueError when the needle is missing: a bug in a rule, not in saline
  when: "'abc'.index(event.data.needle) >= 0"
  do:
    - fire: {tag: test/hardening/answered, data: {needle: "{{ event.data.needle }}"}}
"""


def _history(lab: Lab, rule: str) -> list[dict[str, Any]]:
    with lab.client() as master:
        rows: list[dict[str, Any]] = master.request("reactor_history", rule=rule)["history"]
    return rows


def test_a_rule_that_raises_is_recorded_as_failed_and_the_reactor_goes_on(lab: Lab) -> None:
    (lab.directory / "reactors" / "hardening.yaml").write_text(_RAISING_RULE)
    with lab.client() as master:
        master.request("reactor_reload")
    try:
        seq = max((e["seq"] for e in events(lab)), default=0)
        with lab.client() as master:
            master.request("fire", tag="test/hardening/probe", data={"needle": "z"})
        [failed] = wait_for(lambda: _history(lab, "hardening-probe"), 10, "the failed decision")
        assert failed["verdict"] == "failed"
        assert failed["reason"] == "deciding raised ValueError: substring not found"
        audit = "saline/reactor/hardening-probe/failed"
        wait_for(
            lambda: [e for e in events(lab, since=seq) if e["tag"] == audit],
            10,
            "the failed audit event",
        )
        assert lab.running()["master"]
        # the same rule, an event it can decide on: it fires, the reactor is alive
        with lab.client() as master:
            master.request("fire", tag="test/hardening/probe", data={"needle": "b"})
        wait_for(
            lambda: [e for e in events(lab, since=seq) if e["tag"] == "test/hardening/answered"],
            10,
            "the rule to fire on a good event",
        )
    finally:
        (lab.directory / "reactors" / "hardening.yaml").unlink()
        with lab.client() as master:
            master.request("reactor_reload")
    assert_lab_serves(lab)


def _patient_status(lab: Lab) -> dict[str, Any]:
    """``status`` with time to wait: each write to a locked store blocks for its busy timeout."""
    with lab.client(timeout=30) as master:
        result: dict[str, Any] = master.request("status")
    return result


def test_a_store_that_refuses_writes_stops_nothing(fresh_sqlite_lab: Lab) -> None:
    """The job store is locked by another process while a minion is lost: every write the
    presence loop, the reactor and the job manager try fails; the master lives, says so in
    ``status``, and serves again once the store is back. (PostgreSQL going away:
    tests/integration/test_master_ha.py.)"""
    lab = fresh_sqlite_lab
    store = lab.directory / "master" / "data" / "jobs.sqlite"
    lock = sqlite3.connect(store, timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        victim = lab.state["minions"]["be2"]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: _patient_status(lab)["tasks"]["presence"]["restarts"] >= 1,
            30,
            "the presence loop to fail on the locked store",
        )
        health = _patient_status(lab)["tasks"]["presence"]
        assert "locked" in health["last_error"], health
        assert lab.running()["master"]
    finally:
        lock.rollback()
        lock.close()
    shown = saline(lab, "status").stdout
    assert "task presence: restarted" in shown and "locked" in shown, shown
    code, doc = run_json(lab, "be1,fe1", "test.ping", "-T", "list")
    assert code == 0, doc
    assert set(doc["returns"]) == {"be1", "fe1"}
    wait_for(
        lambda: "be2" not in status(lab)["online"], 20, "be2 reported lost after the store is back"
    )


# -- floods of new keys -------------------------------------------------------------------


def _small_lab(directory: Path, **limits: float) -> Lab:
    lab = Lab(directory)
    lab.up(2, timeout=60, extra_master=limits)
    return lab


@pytest.fixture
def capped_lab(tmp_path: Path) -> Iterator[Lab]:
    """Two minions; a master that lets only 5 keys wait for an operator."""
    lab = _small_lab(tmp_path / "lab", max_pending_keys=5)
    yield lab
    lab.down()


@pytest.fixture
def throttled_lab(tmp_path: Path) -> Iterator[Lab]:
    """Two minions; a master that takes 6 new keys' handshakes at once, then one per 10 s."""
    lab = _small_lab(tmp_path / "lab", new_key_burst_per_address=6, new_key_rate_per_address=0.1)
    yield lab
    lab.down()


def _hello_from_fresh_keys(lab: Lab, dealer: MakeDealer, count: int) -> dict[str, BaseModel]:
    """``count`` new keys say hello; the replies of those whose handshake went through."""
    replies: dict[str, BaseModel] = {}
    for n in range(count):
        d = dealer(on=lab)
        d.send(Hello(id=f"flood-{n}"))
        if d.sock.poll(1000):
            replies[f"flood-{n}"] = d.recv()
        d.close()
    return replies


def test_new_keys_beyond_max_pending_are_refused_and_the_flood_announced_once(
    capped_lab: Lab, dealer: MakeDealer
) -> None:
    lab = capped_lab
    before = refusals(lab)
    seq = max((e["seq"] for e in events(lab)), default=0)
    replies = _hello_from_fresh_keys(lab, dealer, 12)
    filed = sorted(m for m, r in replies.items() if isinstance(r, Pending))
    assert filed == [f"flood-{n}" for n in range(5)]
    assert {m: r for m, r in replies.items() if m not in filed} == {
        f"flood-{n}": Refused(reason="too many keys pending; try again later") for n in range(5, 12)
    }
    assert sorted(status(lab)["keys"]["pending"]) == filed
    wait_counted(lab, "pending_full", before, 7)
    tags = [e["tag"] for e in events(lab, since=seq) if e["tag"].startswith("saline/key/")]
    assert sorted(tags) == sorted([*(f"saline/key/{m}/pending" for m in filed), "saline/key/flood"])
    code, doc = run_json(lab, "*", "test.ping")
    assert code == 0 and set(doc["returns"]) == {"be1", "fe1"}, doc


def test_handshakes_of_new_keys_are_rate_limited_per_address(
    throttled_lab: Lab, dealer: MakeDealer
) -> None:
    lab = throttled_lab
    before = refusals(lab)
    replies = _hello_from_fresh_keys(lab, dealer, 15)
    # the burst of 6 (and at most one more token as the seconds pass) got through
    assert 6 <= len(replies) <= 8, replies
    assert all(isinstance(r, Pending) for r in replies.values())
    after = wait_counted(lab, "new_key_rate", before, 15 - len(replies))
    assert after["handshake_refused"] == before["handshake_refused"]
    # known keys are never limited: the lab's minions still answer
    code, doc = run_json(lab, "*", "test.ping")
    assert code == 0 and set(doc["returns"]) == {"be1", "fe1"}, doc


# -- claimed grains never unlock a secret ------------------------------------------------

_BACKEND_ONLY = "s3cr3t-backend-only"


def _as_minion(lab: Lab, dealer: MakeDealer, minion_id: str) -> Any:
    """A DEALER holding ``minion_id``'s own key (a compromised node)."""
    pair = read_keypair(lab.directory / "minions" / minion_id / "pki", "minion")
    return dealer(pair.public.encode(), pair.secret.encode(), on=lab)


def _pillar_of(d: Any, minion_id: str, grains: dict[str, Any]) -> PillarReply:
    d.send(Hello(id=minion_id, grains=grains))
    assert isinstance(d.recv(), Welcome)
    d.send(PillarRequest(id=minion_id, req=1))
    while True:
        reply = d.recv()
        if isinstance(reply, PillarReply):
            return reply


def test_a_minion_claiming_another_role_gets_no_secret_of_that_role(
    fresh_lab: Lab, dealer: MakeDealer
) -> None:
    lab = fresh_lab
    pillar = lab.directory / "pillar"
    (pillar / "top.yaml").write_text("'*': [common]\n'G@role:backend': [backend]\n")
    (pillar / "common.yaml").write_text("site: lab\n")
    (pillar / "backend.yaml").write_text(f"db_password: !secret {_BACKEND_ONLY}\n")
    before = refusals(lab)
    # fe1 is trusted as a frontend (the lab's minion_grains): claiming backend is refused
    reply = _pillar_of(_as_minion(lab, dealer, "fe1"), "fe1", {"role": "backend"})
    assert reply.pillar == {} and reply.secrets == []
    assert reply.error == (
        "no pillar: claimed grains contradict the trusted ones "
        "(role claimed 'backend', trusted 'frontend')"
    )
    wait_counted(lab, "grains_contradict", before)
    # an accepted key with no trusted grains claiming backend: the common pillar only
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret, on=lab)
        reply = _pillar_of(d, own_id, {"role": "backend"})
        assert reply.error is None
        assert reply.pillar == {"site": "lab"} and reply.secrets == []
        # the operator trusts it as a backend: now it gets the secret
        KeyRing(lab.directory / "master" / "pki").set_trusted_grains(own_id, {"role": "backend"})
        reply = _pillar_of(d, own_id, {"role": "backend"})
        assert reply.pillar == {"site": "lab", "db_password": _BACKEND_ONLY}
        assert reply.secrets == [_BACKEND_ONLY]
    assert lab.running()["master"]


# -- secrets passed as job arguments -------------------------------------------------------


def test_secret_arguments_reach_the_minion_but_are_never_stored_or_shown(lab: Lab) -> None:
    code, doc = run_json(
        lab, "-T", "list", "be1", "test.echo", "s3cret-positional", "--secret", "0"
    )
    assert code == 0, doc
    assert doc["returns"]["be1"]["return"] == "s3cret-positional"  # the job carried it
    job = json.loads(saline(lab, "jobs", "show", doc["jid"], "--out", "json").stdout)["job"]
    assert job["args"] == ["***"]
    assert "s3cret" not in json.dumps(job)
    code, doc = run_json(
        lab, "-T", "list", "be1", "test.echo", "text=s3cret-kw", "--secret", "text"
    )
    assert code == 0 and doc["returns"]["be1"]["return"] == "s3cret-kw", doc
    job = json.loads(saline(lab, "jobs", "show", doc["jid"], "--out", "json").stdout)["job"]
    assert job["kwargs"] == {"text": "***"}
    listed = saline(lab, "jobs", "list", "--out", "json")
    assert "s3cret" not in listed.stdout


# -- concurrency caps -------------------------------------------------------------------


@pytest.fixture
def busy_lab(tmp_path: Path) -> Iterator[Lab]:
    """One minion that runs at most 2 jobs at once; a client may have 3 running."""
    lab = _small_lab(tmp_path / "lab", max_concurrent_jobs=2, max_jobs_per_user=3)
    yield lab
    lab.down()


def _sleeps(lab: Lab, n: int, seconds: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "SALINE_CONFIG": str(lab.master_config)}
    argv = [sys.executable, "-m", "saline.cli.main", "run", "be1", "test.sleep", seconds]
    return [
        subprocess.Popen(
            [*argv, "--timeout", "20", "--out", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]


def test_jobs_beyond_a_minions_cap_wait_on_the_master_and_say_so(busy_lab: Lab) -> None:
    lab = busy_lab
    clients = _sleeps(lab, 3, "3")
    try:
        wait_for(lambda: status(lab)["active_jobs"] == 3, 10, "three jobs running")
        jids = [j["jid"] for j in json.loads(saline(lab, "jobs", "list", "--out", "json").stdout)]
        shown = [_job_show(lab, jid)[1] for jid in jids[:3]]
        assert sorted(len(s["running"]) for s in shown) == [0, 1, 1], shown
        assert sorted(s["queued"] for s in shown) == [[], [], ["be1"]], shown
        # a fourth job by the same user: over max_jobs_per_user
        proc = saline(lab, "run", "be1", "test.ping")
        assert proc.returncode != 0
        assert "has 3 jobs running (max_jobs_per_user 3)" in proc.stderr
        assert refusals(lab)["user_jobs"] == 1
        outputs = [json.loads(c.communicate(timeout=30)[0]) for c in clients]
    finally:
        for c in clients:
            c.kill()
    # every job ran in the end, the queued one too: its timeout started when it was sent
    assert all(o["returns"]["be1"]["success"] for o in outputs), outputs


# -- file replies under back-pressure -----------------------------------------------------


@pytest.fixture
def small_frames_lab(tmp_path: Path) -> Iterator[Lab]:
    """Frames of at most 64 KiB: file replies get 256 KiB at once, then 64 KiB a second."""
    lab = _small_lab(tmp_path / "lab", max_frame_bytes=65536)
    yield lab
    lab.down()


def test_a_minion_asking_for_files_faster_than_it_reads_is_refused(
    small_frames_lab: Lab, dealer: MakeDealer
) -> None:
    lab = small_frames_lab
    (lab.directory / "states" / "big.txt").write_bytes(b"x" * 60_000)
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        d = dealer(public, secret, on=lab)
        before = refusals(lab)
        for req in range(10):
            d.send(FileRequest(id=own_id, req=req, path="big.txt"))
        replies = [d.recv() for _ in range(10)]
        served = [r for r in replies if isinstance(r, FileReply) and r.data is not None]
        refused = [r for r in replies if isinstance(r, FileReply) and r.error is not None]
        assert len(served) == 4 and len(refused) == 6, replies
        assert refused[0].error == "file server: too many bytes asked for too fast; retry shortly"
        wait_counted(lab, "file_rate", before, 6)
        # the copy it has is not re-sent, so asking again costs nothing
        d.send(FileRequest(id=own_id, req=99, path="big.txt", have=served[0].sha256))
        again = d.recv()
        assert isinstance(again, FileReply) and again.data is None and again.error is None


# -- fuzzing: every kind, every msgpack type, as an accepted and as an unknown key ------

_any_msgpack = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=6))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 10**9 - 1)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
_FIELDS = [
    "id",
    "eid",
    "tag",
    "data",
    "grains",
    "jid",
    "fun",
    "success",
    "retcode",
    "ret",
    "req",
    "path",
    "have",
    "version",
    "ts",
    "duration_ms",
]


@st.composite
def _envelopes(draw: st.DrawFn, own_id: str) -> bytes:
    kind = draw(st.sampled_from(sorted(MINION_KINDS)))
    fields: dict[str, Any] = {"v": 1, "kind": kind, "id": own_id}
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=6, unique=True)):
        fields[name] = draw(
            _any_msgpack | st.sampled_from([own_id, f"saline/beacon/{own_id}/x/y", "top.yaml"])
        )
    if draw(st.booleans()):  # sometimes nested far deeper than the packer itself allows
        return _frame(fields, "data", b"\x91" * draw(st.integers(1, 1200)) + b"\xc0")
    return msgpack.packb(fields, use_bin_type=True)


def test_fuzzed_envelopes_of_every_kind_never_hurt_the_master(lab: Lab, dealer: MakeDealer) -> None:
    with key_in_ring(lab, KeyState.ACCEPTED) as (own_id, public, secret):
        accepted, stranger = dealer(public, secret), dealer()
        before = refusals(lab)
        sent = 0

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=_envelopes(own_id), from_accepted=st.booleans())
        def one_frame(data: bytes, from_accepted: bool) -> None:
            nonlocal sent
            (accepted if from_accepted else stranger).send(data)
            sent += 1

        one_frame()
        # every frame was judged: the last one sent is answered after all the others
        accepted.send(SENTINEL_FRAME)
        wait_for(
            lambda: any(
                isinstance(m, Refused) and m.reason.startswith("malformed")
                for m in accepted.waiting()
            ),
            20,
            "the master to get through the fuzzed frames",
        )
        after = refusals(lab)
        assert sent >= 150
        assert after["handler_error"] == before["handler_error"], after
        assert sum(after.values()) > sum(before.values())
    assert_lab_serves(lab)
