"""The master's task supervisor: a loop that raises is logged, counted and restarted."""

import asyncio
import logging

import pytest

from saline.supervisor import Supervisor


async def _wait(predicate: object, timeout: float = 5.0) -> None:
    async def until() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)

    await asyncio.wait_for(until(), timeout)


def test_a_failing_loop_is_restarted_and_its_error_kept(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    healthy = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        healthy.set()
        await asyncio.Event().wait()  # the third run stays up

    async def main() -> dict[str, object]:
        sup = Supervisor(first_backoff=0.01)
        sup.start("flaky", flaky)
        await asyncio.wait_for(healthy.wait(), 5)
        health = sup.as_dict()
        await sup.stop()
        return health

    with caplog.at_level(logging.ERROR):
        health = asyncio.run(main())
    assert runs == [0, 1, 2]
    assert health == {
        "flaky": {
            "restarts": 2,
            "last_error": "RuntimeError: boom 2",
            "last_failure": health["flaky"]["last_failure"],  # type: ignore[index]
        }
    }
    assert "restarting master task flaky" in caplog.text
    assert "RuntimeError: boom 1" in caplog.text  # the traceback is logged


def test_one_task_failing_does_not_disturb_another() -> None:
    ticks: list[int] = []

    async def steady() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.001)

    async def broken() -> None:
        raise ValueError("always")

    async def main() -> tuple[int, int]:
        sup = Supervisor(first_backoff=0.001, max_backoff=0.004)
        sup.start("steady", steady)
        sup.start("broken", broken)
        await _wait(lambda: sup.health["broken"].restarts >= 5)
        before = len(ticks)
        await _wait(lambda: len(ticks) > before + 3)
        restarts = sup.health["steady"].restarts
        await sup.stop()
        return restarts, sup.health["broken"].restarts

    steady_restarts, broken_restarts = asyncio.run(main())
    assert steady_restarts == 0
    assert broken_restarts >= 5


def test_back_off_doubles_up_to_its_cap() -> None:
    sleeps: list[float] = []

    async def broken() -> None:
        raise OSError("disk")

    async def main() -> None:
        async def recording_sleep(delay: float) -> None:
            sleeps.append(delay)
            await asyncio.sleep(0)

        sup = Supervisor(first_backoff=0.001, max_backoff=0.008, sleep=recording_sleep)
        sup.start("broken", broken)
        await _wait(lambda: len(sleeps) >= 6)
        await sup.stop()

    asyncio.run(main())
    assert sleeps[:6] == [0.001, 0.002, 0.004, 0.008, 0.008, 0.008]


def test_a_loop_that_returns_counts_as_failed() -> None:
    async def ends() -> None:
        return None

    async def main() -> str | None:
        sup = Supervisor(first_backoff=0.001)
        sup.start("ends", ends)
        await _wait(lambda: sup.health["ends"].restarts >= 1)
        await sup.stop()
        return sup.health["ends"].last_error

    assert asyncio.run(main()) == "returned"
