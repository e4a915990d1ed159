"""``Store.list_jobs`` with filters: by function, target, user and test mode, on the store
(so ``limit`` counts matching jobs), and no filter keeps the old listing."""

import sys
from typing import Any

import pytest

from master.store.base import TEST_SCAN_FACTOR, JobFilter, JobRecord, ReturnRecord, Store


def job(n: int, **overrides: Any) -> JobRecord:
    """Job number ``n``: a higher number is a newer jid."""
    fields: dict[str, Any] = {
        "jid": f"20240101120000{n:06d}",
        "fun": "test.ping",
        "args": [],
        "kwargs": {},
        "target": "*",
        "tgt_type": "glob",
        "minions": ["be1", "be2"],
        "missing": [],
        "user": "root",
        "created": 1_700_000_000.0 + n,
        "timeout": 10.0,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def ret(record: JobRecord, minion: str, success: bool) -> ReturnRecord:
    return ReturnRecord(record.jid, minion, record.fun, success, 0, "x", 1.0, record.created)


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite and PostgreSQL (tests/unit/conftest.py)."""
    return any_store


def listed(store: Store, limit: int = 50, **filters: Any) -> list[int]:
    """The numbers of the jobs listed, newest first."""
    return [int(s.job.jid[-6:]) for s in store.list_jobs(limit, JobFilter(**filters))]


def test_no_filter_lists_as_before(store: Store) -> None:
    for n in range(1, 6):
        store.save_job(job(n, fun="state.apply" if n % 2 else "test.ping"))
    assert listed(store) == [5, 4, 3, 2, 1]
    assert listed(store, limit=2) == [5, 4]
    assert store.list_jobs(3) == store.list_jobs(3, JobFilter()) == store.list_jobs(3, None)


def test_function_glob_and_the_limit_counts_matching_jobs(store: Store) -> None:
    store.save_job(job(1, fun="state.apply"))
    store.save_job(job(2, fun="state.show"))
    store.save_job(job(3, fun="state.apply"))
    for n in range(4, 30):  # newer jobs of another function crowd the newest rows
        store.save_job(job(n, fun="test.ping"))
    assert listed(store, limit=2, fun="state.*") == [3, 2]
    assert listed(store, fun="state.apply") == [3, 1]
    assert listed(store, fun="State.*") == []  # case matters, as for minion ids
    assert listed(store, fun="state.?how") == [2]
    assert listed(store, fun="state.[!a]*") == [2]  # shell globs: [!...] negates
    assert listed(store, fun="state.[^a]*") == [2]
    assert listed(store, fun="state.[as]*") == [3, 2, 1]


def test_target_glob_matches_the_target_as_given(store: Store) -> None:
    store.save_job(job(1, target="be*"))
    store.save_job(job(2, target="be1,fe1", tgt_type="list"))
    store.save_job(job(3, target="G@role:backend", tgt_type="compound"))
    store.save_job(job(4, target="fe2"))
    assert listed(store, target="be*") == [2, 1]
    assert listed(store, target="G@*") == [3]
    assert listed(store, target="fe2") == [4]


def test_user_is_an_exact_name(store: Store) -> None:
    store.save_job(job(1, user="alice"))
    store.save_job(job(2, user="root"))
    store.save_job(job(3, user="alice2"))
    assert listed(store, user="alice") == [1]
    assert listed(store, user="ali*") == []


def test_test_mode_is_kwargs_test_true_in_any_spelling_the_minion_takes(
    store: Store,
) -> None:
    spellings: list[Any] = [True, "true", "Yes", 1, "on", False, "false", 0, "no", None]
    for n, value in enumerate(spellings, start=1):
        store.save_job(job(n, fun="state.apply", kwargs={"test": value, "failhard": False}))
    store.save_job(job(20, fun="state.apply", kwargs={}))  # no test kwarg at all
    store.save_job(job(21, fun="test.ping"))
    assert listed(store, test=True) == [5, 4, 3, 2, 1]
    assert listed(store, test=False) == [21, 20, 10, 9, 8, 7, 6]
    assert listed(store, limit=2, test=True) == [5, 4]  # the limit counts matching jobs
    assert listed(store, test=False, fun="state.*") == [20, 10, 9, 8, 7, 6]


def test_test_mode_filter_keeps_the_counts_of_returns(store: Store) -> None:
    dry = job(1, fun="state.apply", kwargs={"test": True})
    store.save_job(dry)
    store.save_job(job(2, fun="state.apply"))
    store.save_returns([ret(dry, "be1", True), ret(dry, "be2", False)])
    [summary] = store.list_jobs(10, JobFilter(test=True))
    assert (summary.job, summary.returned, summary.succeeded) == (dry, 2, 1)


def test_test_mode_scan_is_bounded(store: Store) -> None:
    """kwargs are msgpack blobs SQL cannot read: the test-mode filter reads at most
    TEST_SCAN_FACTOR x limit of the newest jobs that pass the other filters."""
    limit = 2
    store.save_job(job(1, kwargs={"test": True}))  # beyond the scan
    store.save_job(job(2, kwargs={"test": True}, fun="state.apply"))  # other filters pass it
    bound = TEST_SCAN_FACTOR * limit
    for n in range(10, 10 + bound):
        store.save_job(job(n, fun="test.ping"))
    assert listed(store, limit=limit, test=True) == []
    # the SQL filters apply before the bound: the state jobs are within reach
    assert listed(store, limit=limit, test=True, fun="state.*") == [2]
    store.save_job(job(10 + bound, kwargs={"test": True}))
    assert listed(store, limit=limit, test=True) == [10 + bound]


def test_test_mode_scan_has_a_ceiling_whatever_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bound as the store's own module sees it
    monkeypatch.setattr(sys.modules[type(store).__module__], "TEST_SCAN_MAX", 5)
    store.save_job(job(1, kwargs={"test": True}))
    for n in range(2, 7):
        store.save_job(job(n))
    assert listed(store, limit=100, test=True) == []  # 5 read, not 100 x 100
    store.save_job(job(7, kwargs={"test": True}))
    assert listed(store, limit=100, test=True) == [7]
