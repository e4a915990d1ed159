"""Drift: a state run that changed something (apply) or would have (test mode).

Every stored return of ``state.apply`` is checked; a clean run fires nothing, a run that
found the node different from its declaration fires ``saline/state/ID/drift`` listing the
states that differed. A drift event is derived from what a minion sent, so it obeys the
minion's own event rules: its rate limit, and ``max_event_bytes`` (beyond it, the event
lists the states without their changes and says it was cut).
"""

from typing import Any

from master.store.base import ReturnRecord
from saline.values import value_problem

STATE_FUNCTIONS = frozenset({"state.apply"})


def drift_of(record: ReturnRecord) -> dict[str, Any] | None:
    """The drift event data for one return, or None when the run was clean."""
    if record.fun not in STATE_FUNCTIONS or not isinstance(record.ret, list):
        return None
    differing = [
        {
            "state": chunk.get("state"),
            "name": chunk.get("name"),
            "result": chunk.get("result"),
            "changes": chunk.get("changes", {}),
            "comment": chunk.get("comment", ""),
        }
        for chunk in record.ret
        if isinstance(chunk, dict) and (chunk.get("changes") or chunk.get("result") is None)
    ]
    if not differing:
        return None
    test = all(d["result"] is None for d in differing)
    return {"jid": record.jid, "test": test, "states": differing}


def bounded(drift: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``drift`` itself, or without the states' changes and comments when it is too big."""
    if value_problem(drift, max_bytes) is None:
        return drift
    states = [{k: d[k] for k in ("state", "name", "result")} for d in drift["states"][:1000]]
    return {**drift, "states": states, "truncated": True}
