"""Drift events: only a state run that changed (or would change) something fires one."""

from typing import Any

from master.drift import drift_of
from master.store.base import ReturnRecord


def _ret(ret: Any, fun: str = "state.apply") -> ReturnRecord:
    return ReturnRecord("j1", "be1", fun, True, 0, ret, 1.0, 0.0)


def test_clean_run_fires_nothing() -> None:
    clean = [{"state": "file.managed", "name": "/x", "result": True, "changes": {}}]
    assert drift_of(_ret(clean)) is None


def test_applied_changes_are_drift() -> None:
    run = [
        {"state": "file.managed", "name": "/x", "result": True, "changes": {"diff": "+a"}},
        {"state": "service.running", "name": "etcd", "result": True, "changes": {}},
    ]
    event = drift_of(_ret(run))
    assert event is not None and event["test"] is False
    assert [s["name"] for s in event["states"]] == ["/x"]


def test_test_mode_would_change_is_drift() -> None:
    run = [{"state": "file.managed", "name": "/x", "result": None, "changes": {"diff": "+a"}}]
    event = drift_of(_ret(run))
    assert event is not None and event["test"] is True and event["jid"] == "j1"


def test_other_functions_and_errors_are_not_drift() -> None:
    assert drift_of(_ret([{"changes": {"a": 1}}], fun="cmd.run")) is None
    assert drift_of(_ret({"error": "StateError", "message": "bad file"})) is None
