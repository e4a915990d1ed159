"""Minion event intake: namespaces, one rate-limited event per flood, resend dedup."""

from master.intake import EventIntake

PATTERNS = ["saline/beacon/{id}/*", "minion/{id}/*"]


def test_namespaces() -> None:
    intake = EventIntake(PATTERNS, 10, 10)
    assert intake.allowed("be1", "saline/beacon/be1/service/stopped")
    assert not intake.allowed("be1", "saline/beacon/be2/service/stopped")
    assert not intake.allowed("be1", "saline/job/1/new")
    assert not intake.allowed("be1", "minion/be1/../be2/x")


def test_masters_requests_never_come_from_a_minion_whatever_the_patterns() -> None:
    intake = EventIntake(["*"], 10, 10)
    assert intake.allowed("be1", "saline/master2/x")
    assert not intake.allowed("be1", "saline/master/request/abc")
    assert not intake.allowed("be1", "saline/master/answer/abc")


def test_one_episode_per_flood() -> None:
    intake = EventIntake(PATTERNS, rate=50, burst=100)
    firsts = 0
    admitted = 0
    for n in range(2000):  # 2,000 events over 4 s: 500/s against 50/s
        ok, first = intake.admit("m", now=n * 0.002)
        admitted += ok
        firsts += first
    assert firsts == 1
    assert 100 <= admitted <= 100 + 50 * 4 + 1
    ok, first = intake.admit("m", now=60.0)  # a minute later: a new episode may start
    assert ok and not first


def test_resends_are_dropped() -> None:
    intake = EventIntake(PATTERNS, 10, 10)
    assert not intake.duplicate("m", "1")
    assert intake.duplicate("m", "1")
    assert not intake.duplicate("n", "1")
