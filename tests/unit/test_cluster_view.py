"""The cluster view the reactor keeps from beacon events is bounded per minion."""

from master.observations import (
    MAX_OBSERVATION_BYTES_PER_MINION,
    MAX_OBSERVATIONS_PER_MINION,
    Observations,
)
from master.store.base import EventRecord
from saline.wire import pack


def _observe(view: Observations, minion: str, key: str, blob: str) -> None:
    data = {"key": key, "blob": blob}
    view.observe(EventRecord(f"saline/beacon/{minion}/b/ok", data, minion, 1.0))


def _bytes(view: Observations, minion: str) -> int:
    return sum(
        len(pack({k: v for k, v in o.items() if k not in ("state", "ts")})) + 64
        for o in view.by_minion[minion].values()
    )


def test_distinct_keys_never_grow_a_minions_view_beyond_its_byte_bound() -> None:
    view = Observations()
    for n in range(500):
        _observe(view, "m1", f"k{n}", "x" * 60_000)
    kept = view.by_minion["m1"]
    assert _bytes(view, "m1") <= MAX_OBSERVATION_BYTES_PER_MINION
    assert "b:k499" in kept and "b" in kept  # the newest stays, with its beacon's own entry
    assert "b:k0" not in kept  # the oldest went
    assert len(kept) < 20


def test_many_small_keys_are_bounded_in_count() -> None:
    view = Observations()
    for n in range(2 * MAX_OBSERVATIONS_PER_MINION):
        _observe(view, "m1", f"k{n}", "")
    assert len(view.by_minion["m1"]) == MAX_OBSERVATIONS_PER_MINION
    _observe(view, "m2", "only", "x")  # another minion has its own bound
    assert set(view.by_minion["m2"]) == {"b", "b:only"}
    assert view.states() == {"m1": {"b": "ok"}, "m2": {"b": "ok"}}


def test_only_beacon_events_are_observed() -> None:
    view = Observations()
    view.observe(EventRecord("saline/minion/m1/start", {}, "m1", 1.0))
    view.observe(EventRecord("chef/backend/be1/pg/out_of_sync", {}, "be1", 1.0))
    assert view.by_minion == {}
