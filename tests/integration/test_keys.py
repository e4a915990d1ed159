"""Key acceptance and identity through real processes: pending, accept, reject, impersonation."""

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from saline.client import MasterClient
from saline.keys import KeyRing, KeyState, fingerprint, read_keypair
from saline.lab.lab import Lab
from saline.lab.processes import alive, stop
from tests.support import (
    add_minion,
    as_user,
    key_list,
    online,
    restart_master,
    run_json,
    saline,
    status,
    wait_for,
)


def _log(mdir: Path) -> str:
    log = mdir / "minion.log"
    return log.read_text() if log.exists() else ""


def test_pending_then_accept_then_run(lab: Lab) -> None:
    pid, mdir = add_minion(lab, "newbie")
    try:
        wait_for(lambda: "newbie" in key_list(lab)["pending"], 15, "newbie pending")
        code, doc = run_json(lab, "newbie", "test.ping")
        assert code == 3 and doc["returns"] == {}, "a pending key is not a target"
        code, doc = run_json(lab, "*", "test.ping")
        assert "newbie" not in doc["returns"] and "newbie" not in doc["missing"]
        assert "job " not in _log(mdir), "a pending minion never receives a job"

        proc = saline(lab, "key", "accept", "newbie")
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: "newbie" in online(lab), 15, "newbie online after accept")
        code, doc = run_json(lab, "newbie", "grains.get", "role")
        assert code == 0 and doc["returns"]["newbie"]["return"] == "extra"
    finally:
        stop({pid: "minion.yaml"})
        saline(lab, "key", "delete", "newbie")


def test_rejected_key_is_refused_at_the_handshake(lab: Lab) -> None:
    before = status(lab)["refusals"].get("handshake_refused", 0)
    pid, mdir = add_minion(lab, "intruder")
    try:
        wait_for(lambda: "intruder" in key_list(lab)["pending"], 15, "intruder pending")
        assert saline(lab, "key", "reject", "intruder").returncode == 0
        # the open connection's hellos are refused at once...
        wait_for(lambda: status(lab)["refusals"].get("rejected_key", 0) > 0, 15, "hello refused")
        # ...and a new connection never completes its handshake
        stop({pid: "minion.yaml"})
        pid, mdir = add_minion(lab, "intruder")
        wait_for(
            lambda: status(lab)["refusals"].get("handshake_refused", 0) > before,
            15,
            "the rejected key's reconnect refused at the handshake",
        )
        code, doc = run_json(lab, "*", "test.ping")
        assert code == 0 and "intruder" not in doc["returns"]
        assert "job " not in _log(mdir)
        assert "intruder" in key_list(lab)["rejected"]
    finally:
        stop({pid: "minion.yaml"})
        saline(lab, "key", "delete", "intruder")


def test_new_key_claiming_an_accepted_id_is_refused(lab: Lab) -> None:
    before = status(lab)["refusals"].get("id_conflict", 0)
    pid, mdir = add_minion(lab, "be1")  # a fresh key pretending to be be1
    try:
        wait_for(lambda: status(lab)["refusals"].get("id_conflict", 0) > before, 15, "id_conflict")
        ring = KeyRing(lab.directory / "master" / "pki")
        real = ring.get("be1", KeyState.ACCEPTED)
        assert real is not None
        impostor = read_keypair(mdir / "pki", "minion").public
        assert real.public != impostor
        assert ring.lookup_key(impostor) is None, "the impostor's key is not stored anywhere"
        assert "job " not in _log(mdir)
    finally:
        stop({pid: "minion.yaml"})


def test_accepted_key_claiming_another_id_is_refused(lab: Lab) -> None:
    """fe2's own key, used by a minion calling itself be9: refused and counted."""
    before = status(lab)["refusals"].get("id_mismatch", 0)
    fe2_pki = lab.directory / "minions" / "fe2" / "pki"
    pid, _ = add_minion(lab, "be9", pki_dir=str(fe2_pki))
    try:
        wait_for(lambda: status(lab)["refusals"].get("id_mismatch", 0) > before, 15, "refusal")
        assert "be9" not in online(lab)
        assert all("be9" not in ids for ids in key_list(lab).values())
        code, doc = run_json(lab, "fe2", "grains.get", "id")
        assert code == 0
        assert doc["returns"]["fe2"]["return"] == "fe2", "the real fe2 is unaffected"
    finally:
        stop({pid: "minion.yaml"})


def test_minion_refuses_a_master_with_another_fingerprint(lab: Lab) -> None:
    wrong = "00:" * 31 + "00"
    pid, mdir = add_minion(lab, "picky", master_finger=wrong)
    try:
        wait_for(lambda: not alive(pid, "minion.yaml"), 15, "picky exits")
        out = (mdir / "minion.out").read_text()
        assert "differs from master_finger" in out
        assert "picky" not in key_list(lab)["pending"]
    finally:
        stop({pid: "minion.yaml"})


def test_delete_then_the_minion_lands_in_pending_again(fresh_lab: Lab) -> None:
    lab = fresh_lab
    assert saline(lab, "key", "delete", "fe1").returncode == 0
    code, doc = run_json(lab, "fe1", "test.ping")
    assert code == 3 and doc["returns"] == {}, "a deleted key is no target"
    # its next hello (heartbeats are refused, it says hello again) lands in pending
    saline(lab, "key", "list")
    wait_for(lambda: "fe1" in key_list(lab)["pending"], 20, "fe1 re-submitted")
    assert saline(lab, "key", "accept", "--all").returncode == 0
    wait_for(lambda: run_json(lab, "fe1", "test.ping")[0] == 0, 20, "fe1 answers again")


def test_finger_and_gen(lab: Lab, tmp_path: Path) -> None:
    proc = saline(lab, "key", "finger")
    master_pub = read_keypair(lab.directory / "master" / "pki", "master").public
    assert proc.stdout.strip() == f"master: {fingerprint(master_pub)}"
    proc = saline(lab, "key", "gen", "--id", "pre1", "--dir", str(tmp_path / "pre1"))
    assert proc.returncode == 0, proc.stderr
    secret = tmp_path / "pre1" / "minion.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pre1").stat().st_mode) == 0o700
    assert "pre1" in key_list(lab)["accepted"]
    proc = saline(lab, "key", "finger", "pre1")
    assert fingerprint(read_keypair(tmp_path / "pre1", "minion").public) in proc.stdout
    assert saline(lab, "key", "delete", "pre1").returncode == 0
    assert saline(lab, "key", "accept", "../etc").returncode != 0


def test_key_files_are_private(lab: Lab) -> None:
    pki = lab.directory / "master" / "pki"
    assert stat.S_IMODE((pki / "master.key").stat().st_mode) == 0o600
    for sub in ("minions", "minions_pre", "minions_rejected"):
        assert stat.S_IMODE((pki / sub).stat().st_mode) == 0o700
    minion_key = lab.directory / "minions" / "be1" / "pki" / "minion.key"
    assert stat.S_IMODE(minion_key.stat().st_mode) == 0o600


def test_auto_accept(fresh_lab: Lab) -> None:
    lab = fresh_lab
    restart_master(lab, auto_accept=True)
    pid, _ = add_minion(lab, "auto1")
    try:
        wait_for(lambda: "auto1" in online(lab), 15, "auto-accepted minion online")
        assert run_json(lab, "auto1", "test.ping")[0] == 0
        assert "AUTO-ACCEPTED" in (lab.directory / "logs" / "master.log").read_text()
    finally:
        stop({pid: "minion.yaml"})


def _client_call(path: Path, fun: str) -> Any:
    def call() -> Any:
        with MasterClient(path) as master:
            return [m["type"] for m in master.stream("run", target="*", fun=fun)][-1]

    return call


def test_client_api_is_root_only_and_acl_limits_users(fresh_lab: Lab) -> None:
    lab = fresh_lab
    nobody = (65534, 65534)
    sock = Path(json.loads(json.dumps(str(lab.client().path))))
    denied = as_user(*nobody, _client_call(sock, "test.ping"))
    assert "permission denied" in denied["error"].lower(), "no ACL: the socket is root-only"

    sock_dir = Path(tempfile.mkdtemp(prefix="saline-acl-"))
    os.chmod(sock_dir, 0o755)
    restart_master(lab, sock_dir=sock_dir, client_acl={"nobody": ["test.*"]})
    path = sock_dir / "client.sock"
    assert as_user(*nobody, _client_call(path, "test.ping")) == {"ok": "done"}
    refused = as_user(*nobody, _client_call(path, "cmd.run"))
    assert "may not run cmd.run" in refused["error"]
    stranger = as_user(1, 1, _client_call(path, "test.ping"))  # daemon: not in the ACL
    assert "not in client_acl" in stranger["error"]
    assert status(lab)["refusals"]["client_acl"] >= 1
