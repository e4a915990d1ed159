"""The cluster view the reactor keeps from beacon events is bounded per minion."""

from types import SimpleNamespace

from master.reactor import (
    MAX_OBSERVATION_BYTES_PER_MINION,
    MAX_OBSERVATIONS_PER_MINION,
    Reactor,
)
from master.store.base import EventRecord
from saline.wire import pack


def _view() -> SimpleNamespace:
    return SimpleNamespace(observations={}, _view_sizes={})


def _observe(view: SimpleNamespace, minion: str, key: str, blob: str) -> None:
    data = {"key": key, "blob": blob}
    Reactor.observe(view, EventRecord(f"saline/beacon/{minion}/b/ok", data, minion, 1.0))  # type: ignore[arg-type]


def test_distinct_keys_never_grow_a_minions_view_beyond_its_byte_bound() -> None:
    view = _view()
    for n in range(500):
        _observe(view, "m1", f"k{n}", "x" * 60_000)
    kept = view.observations["m1"]
    total = sum(view._view_sizes["m1"].values())
    assert total <= MAX_OBSERVATION_BYTES_PER_MINION
    assert "b:k499" in kept and "b" in kept  # the newest stays, with its beacon's own entry
    assert "b:k0" not in kept  # the oldest went
    assert len(kept) < 20


def test_many_small_keys_are_bounded_in_count() -> None:
    view = _view()
    for n in range(2 * MAX_OBSERVATIONS_PER_MINION):
        _observe(view, "m1", f"k{n}", "")
    assert len(view.observations["m1"]) == MAX_OBSERVATIONS_PER_MINION
    _observe(view, "m2", "only", "x")  # another minion has its own bound
    assert set(view.observations["m2"]) == {"b", "b:only"}
    assert view._view_sizes["m2"]["b"] == len(pack({"key": "only", "blob": "x"})) + 64
