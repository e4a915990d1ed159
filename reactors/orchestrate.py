"""Run runbooks: steps in order, batches strictly one after another, failhard honoured.

Salt's orchestrate lets a batched rollout carry on after a failed batch. Here, when a step is
``failhard`` (the default), the first batch with a minion that failed, timed out or was not
reached is the last batch started, and the runbook stops at that step. Every step ends with a
:class:`StepResult` whose ``comment`` says why it ended as it did.

Jobs go through an injected :class:`JobRunner` and notices through an injected
:data:`NotifyStep`, so this module knows nothing of the master; ``sleep`` and ``clock`` are
injected too, so ``wait_for`` is testable without waiting. In test mode nothing changes:
``run`` steps are only planned, ``state`` steps run with ``test=True``, ``wait_for`` steps do
not poll and ``notify`` steps tell no one.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from reactors.runbook import (
    NotifySpec,
    Runbook,
    RunbookError,
    RunSpec,
    StateSpec,
    Step,
    StepKind,
    WaitForSpec,
    evaluate,
    find_runbook,
    load_runbook,
    render_steps,
)
from saline.errors import SalineError

__all__ = [
    "JobOutcome",
    "JobRunner",
    "MinionReturn",
    "NotifyStep",
    "Runbook",
    "RunbookError",
    "RunbookResult",
    "StepNotice",
    "StepResult",
    "find_runbook",
    "load_runbook",
    "run_runbook",
]

log = logging.getLogger(__name__)

#: a wait_for poll always gets at least this long to answer, even at the deadline
MIN_POLL_TIMEOUT = 1.0
#: ids listed in a comment before "(+N more)"
_LISTED = 10


@dataclass(frozen=True)
class MinionReturn:
    """One minion's answer to a job."""

    success: bool
    retcode: int
    ret: Any


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: the returns, and the minions that failed, timed out or were not reached."""

    jid: str
    returns: dict[str, MinionReturn] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)

    def problems(self, expected: Iterable[str]) -> dict[str, str]:
        """Minion id -> why it did not succeed; an ``expected`` minion absent from the outcome
        counts as not reached."""
        problems = dict.fromkeys(self.not_reached, "not reached")
        problems.update(dict.fromkeys(self.timed_out, "timed out"))
        problems.update(dict.fromkeys(self.failed, "failed"))
        for minion, ret in self.returns.items():
            if not ret.success:
                problems[minion] = f"failed (retcode {ret.retcode})"
        answered = {*self.returns, *problems}
        problems.update({m: "not reached (no answer)" for m in expected if m not in answered})
        return dict(sorted(problems.items()))


class JobRunner(Protocol):
    """Runs jobs for the orchestrator (the master's job manager, or a fake in tests)."""

    async def run(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> JobOutcome:
        """Run ``fun`` on the target and wait (up to ``timeout`` per minion) for the returns.

        :raises SalineError: when the job cannot be started; the step then fails.
        """
        ...

    def match(self, target: str, tgt_type: str) -> list[str]:
        """Ids of the accepted minions the target matches (used to plan batches)."""
        ...


class StepResult(BaseModel):
    """What one step did; ``result`` is True, False, or None (test mode: would act)."""

    name: str
    kind: StepKind
    result: bool | None
    #: the batches started, in order (unbatched: one batch)
    batches: list[list[str]] = []
    jids: list[str] = []
    comment: str = ""
    duration_ms: int = 0
    #: ``when`` was false; the step did nothing (result True)
    skipped: bool = False
    #: minion id -> why it failed
    failed: dict[str, str] = {}
    #: minion id -> its last return
    returns: dict[str, Any] = {}


class RunbookResult(BaseModel):
    """What a runbook did: ``success`` is false if any step failed, failhard or not."""

    name: str
    test: bool
    success: bool
    steps: list[StepResult]
    #: the failhard step that stopped the runbook
    stopped_at: str | None = None
    #: steps never started because the runbook stopped
    not_started: list[str] = []


@dataclass(frozen=True)
class StepNotice:
    """What a runbook's ``notify`` step asks to tell: its message, and the steps so far."""

    runbook: str
    #: the step's 1-based number in the runbook, and its name
    number: int
    step: str
    target: str
    message: str
    #: each earlier step's name, result and comment, in order
    steps: list[dict[str, Any]]


#: queues a runbook's notice (the master's notifier): -> (queued, what to say)
NotifyStep = Callable[[StepNotice], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class _Call:
    """The function a step's jobs call."""

    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float


class _StepFailed(RunbookError):
    """Ends a step as failed; the message is the step's comment. Never leaves this module."""


async def run_runbook(
    runbook: Runbook,
    runner: JobRunner,
    *,
    vars: Mapping[str, Any] | None = None,
    test: bool = False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    fatal: tuple[type[SalineError], ...] = (),
    notify: NotifyStep | None = None,
) -> RunbookResult:
    """Run ``runbook``'s steps in order with ``vars`` (merged over the runbook's defaults).

    Every step is rendered before the first one runs. Job failures are results, not
    exceptions: only rendering raises, and a runner's error of a ``fatal`` type (a deposed
    leader's fenced write: no further job may be sent), which ends the runbook at once.
    ``notify`` queues the notices of ``notify`` steps (None: such a step fails, saying so).

    :raises RunbookError: a template names an undefined var or renders an invalid target.
    """
    merged = {**runbook.vars, **(vars or {})}
    steps = render_steps(runbook, merged)
    orchestrator = _Orchestrator(runbook.name, runner, merged, test, sleep, clock, fatal)
    orchestrator.notify = notify
    return await orchestrator.run(steps)


class _Orchestrator:
    def __init__(
        self,
        name: str,
        runner: JobRunner,
        vars: dict[str, Any],
        test: bool,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        fatal: tuple[type[SalineError], ...] = (),
    ) -> None:
        self.name = name
        self.runner = runner
        self.vars = vars
        self.test = test
        self.sleep = sleep
        self.clock = clock
        #: a runner's errors that end the runbook instead of the step
        self.fatal = fatal
        #: names of probe steps: their failures do not fail the runbook
        self.probes: set[str] = set()
        #: queues the notices of notify steps
        self.notify: NotifyStep | None = None

    async def run(self, steps: list[Step]) -> RunbookResult:
        results: list[StepResult] = []
        self.probes = {step.name for step in steps if step.probe}
        for index, step in enumerate(steps):
            started = self.clock()
            result = await self._step(index + 1, step, results)
            result.duration_ms = round((self.clock() - started) * 1000)
            results.append(result)
            log.info("runbook %s: step %r: %s", self.name, step.name, result.comment)
            if result.result is False and step.failhard and not step.probe:
                rest = [s.name for s in steps[index + 1 :]]
                return self._finish(results, stopped_at=step.name, not_started=rest)
        return self._finish(results, stopped_at=None, not_started=[])

    def _finish(
        self, results: list[StepResult], stopped_at: str | None, not_started: list[str]
    ) -> RunbookResult:
        success = all(r.result is not False for r in results if r.name not in self.probes)
        return RunbookResult(
            name=self.name,
            test=self.test,
            success=success,
            steps=results,
            stopped_at=stopped_at,
            not_started=not_started,
        )

    async def _step(self, number: int, step: Step, previous: list[StepResult]) -> StepResult:
        result = StepResult(name=step.name, kind=step.kind, result=True)
        try:
            if self._skipped(step, previous):
                result.skipped = True
                result.comment = f"skipped: when {step.when!r} is false"
            elif isinstance(step.spec, WaitForSpec):
                await self._wait_for(step.spec, result)
            elif isinstance(step.spec, NotifySpec):
                await self._notify(number, step, step.spec, result, previous)
            else:
                await self._job_step(step, step.spec, result)
        except _StepFailed as e:
            result.result, result.comment = False, str(e)
        return result

    def _skipped(self, step: Step, previous: list[StepResult]) -> bool:
        if step.when is None:
            return False
        steps = {r.name: r.model_dump() for r in previous}
        context = {"vars": self.vars, "steps": steps, "test": self.test}
        try:
            return not evaluate(step.when, context)
        except RunbookError as e:
            raise _StepFailed(f"when could not be evaluated: {e}") from e

    async def _notify(
        self,
        number: int,
        step: Step,
        spec: NotifySpec,
        result: StepResult,
        previous: list[StepResult],
    ) -> None:
        """A ``notify`` step: hand the notice over; its delivery is the notifier's."""
        if self.test:
            result.result = None
            result.comment = f"would notify {spec.target}: {_short(spec.message, 200)}"
            return
        if self.notify is None:
            raise _StepFailed(f"notify {spec.target}: no notify targets are configured")
        steps = [{"name": r.name, "result": r.result, "comment": r.comment} for r in previous]
        notice = StepNotice(self.name, number, step.name, spec.target, spec.message, steps)
        queued, said = await self.notify(notice)
        if not queued:
            raise _StepFailed(said)
        result.comment = said

    def _match(self, spec: RunSpec | StateSpec | WaitForSpec) -> list[str]:
        try:
            minions = sorted(set(self.runner.match(spec.target, spec.tgt_type)))
        except SalineError as e:
            raise _StepFailed(f"cannot match target {spec.target!r}: {e}") from e
        if not minions:
            raise _StepFailed(f"target {spec.target!r} ({spec.tgt_type}) matched no minions")
        return minions

    async def _job(
        self, target: str, tgt_type: str, call: _Call, minions: list[str], result: StepResult
    ) -> dict[str, str]:
        """Run one job expected to reach ``minions``; record it in ``result``; return problems."""
        try:
            outcome = await self.runner.run(
                target, tgt_type, call.fun, call.args, call.kwargs, call.timeout
            )
        except SalineError as e:
            if isinstance(e, self.fatal):
                raise
            return dict.fromkeys(minions, f"not reached ({e})")
        result.jids.append(outcome.jid)
        result.returns.update({m: r.ret for m, r in outcome.returns.items()})
        problems = outcome.problems(minions)
        for minion, why in problems.items():  # the error each produced, for a human
            said = _error_of(outcome.returns[minion].ret) if minion in outcome.returns else ""
            if said:
                problems[minion] = f"{why}: {said}"
        return problems

    async def _job_step(self, step: Step, spec: RunSpec | StateSpec, result: StepResult) -> None:
        """A ``run`` or ``state`` step: batches in turn, stopping at a failed one if failhard."""
        if isinstance(spec, RunSpec):
            call = _Call(spec.function, spec.args, spec.kwargs, spec.timeout)
        else:
            call = _Call("state.apply", list(spec.states), {"test": self.test}, spec.timeout)
        fun = call.fun
        minions = self._match(spec)
        size = step.batch or len(minions)
        batches = [minions[i : i + size] for i in range(0, len(minions), size)]
        how = f" in {len(batches)} batches of {size}" if len(batches) > 1 else ""
        if self.test and isinstance(spec, RunSpec):
            result.result, result.batches = None, batches
            result.comment = f"would run {fun} on {_ids(minions)}{how}"
            return
        for number, batch in enumerate(batches, 1):
            result.batches.append(batch)
            if step.batch is None:  # one job by the step's own target
                problems = await self._job(spec.target, spec.tgt_type, call, batch, result)
            else:
                problems = await self._job(",".join(batch), "list", call, batch, result)
            result.failed.update(problems)
            if problems and step.failhard and number < len(batches):
                left = [m for later in batches[number:] for m in later]
                raise _StepFailed(
                    f"{fun}: batch {number} of {len(batches)} failed ({_problems(problems)}); "
                    f"stopped before {len(left)} more minion(s): {_ids(left)}"
                )
        self._conclude(fun, minions, how, result)

    def _conclude(self, fun: str, minions: list[str], how: str, result: StepResult) -> None:
        """Set the result of a job step whose batches all ran."""
        if result.failed:
            result.result = False
            result.comment = (
                f"{fun} failed on {len(result.failed)} of {len(minions)} minion(s): "
                f"{_problems(result.failed)}"
            )
        elif self.test:  # a state step: test=True reports what would change
            changing = sorted(m for m, ret in result.returns.items() if _would_change(ret))
            result.result = None if changing else True
            result.comment = (
                f"{fun} (test) would change {_ids(changing)}"
                if changing
                else f"{fun} (test): no changes on {_ids(minions)}"
            )
        else:
            result.comment = f"{fun} succeeded on {_ids(minions)}{how}"

    async def _wait_for(self, spec: WaitForSpec, result: StepResult) -> None:
        """Poll until ``condition`` holds on every matched minion, or fail at the timeout."""
        minions = self._match(spec)
        what = f"{spec.function} on {_ids(minions)} until {spec.condition!r}"
        result.batches = [minions]
        if self.test:
            result.result = None
            result.comment = (
                f"would wait for {what} (every {_secs(spec.interval)}, up to {_secs(spec.timeout)})"
            )
            return
        started = self.clock()
        deadline = started + spec.timeout
        polls = 0
        while True:
            polls += 1
            timeout = max(min(spec.poll_timeout, deadline - self.clock()), MIN_POLL_TIMEOUT)
            call = _Call(spec.function, spec.args, spec.kwargs, timeout)
            problems = await self._job(",".join(minions), "list", call, minions, result)
            pending = {**self._unmet(spec, minions, problems, result.returns), **problems}
            now = self.clock()
            if not pending:
                result.comment = (
                    f"{spec.condition!r} held on {_ids(minions)} after {polls} poll(s) "
                    f"({_secs(now - started)})"
                )
                result.failed = {}
                return
            if now >= deadline:
                result.failed = dict(sorted(pending.items()))
                raise _StepFailed(
                    f"timed out after {_secs(spec.timeout)} ({polls} polls) waiting for {what}: "
                    f"{_problems(result.failed)}"
                )
            await self.sleep(min(spec.interval, deadline - now))

    def _unmet(
        self,
        spec: WaitForSpec,
        minions: list[str],
        problems: Mapping[str, str],
        returns: Mapping[str, Any],
    ) -> dict[str, str]:
        """Minion id -> why the condition does not hold yet, for minions that answered."""
        unmet: dict[str, str] = {}
        for minion in minions:
            if minion in problems or minion not in returns:
                continue
            ret = returns[minion]
            context = {"ret": ret, "minion": minion, "vars": self.vars}
            try:
                if not evaluate(spec.condition, context):
                    unmet[minion] = f"condition false (ret: {_short(ret)})"
            except RunbookError as e:
                unmet[minion] = f"condition error: {e}"
        return unmet


def _error_of(ret: Any, limit: int = 300) -> str:
    """What a failed return says went wrong, in one short line ("" if it says nothing):
    a string's last line, a function's error (``{"error": kind, "message": ...}``, as the
    minion returns what a function raised), a mapping's ``error``/``stderr``/``comment``, or
    the comment of a state return's first failed entry."""
    text: Any = ret
    if isinstance(ret, Mapping) and ret.get("error") and isinstance(ret.get("message"), str):
        text = f"{ret['error']}: {ret['message']}"  # the kind alone says nothing
    elif isinstance(ret, Mapping):
        text = next((ret[k] for k in ("error", "stderr", "comment") if ret.get(k)), "")
    elif isinstance(ret, list):
        failed = [e for e in ret if isinstance(e, Mapping) and e.get("result") is False]
        text = failed[0].get("comment", "") if failed else ""
    if not isinstance(text, str):
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _would_change(ret: Any) -> bool:
    """True if a ``state.apply`` test return has an entry with result None (would change)."""
    entries = ret if isinstance(ret, list) else []
    return any(isinstance(e, Mapping) and e.get("result", False) is None for e in entries)


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:_LISTED])
    return f"{shown} (+{len(ids) - _LISTED} more)" if len(ids) > _LISTED else shown


def _problems(problems: Mapping[str, str]) -> str:
    items = [f"{m}: {why}" for m, why in problems.items()]
    more = f"; +{len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return "; ".join(items[:_LISTED]) + more


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _secs(seconds: float) -> str:
    return f"{round(seconds, 1):g}s"
