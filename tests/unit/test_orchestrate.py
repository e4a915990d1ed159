"""Tests for runbooks: loading, rendering, batching, failhard, test mode and wait_for.

Jobs run on :class:`FakeRunner`, in-memory minions whose answer per function is scripted and
which records every call in order, stamped with the fake clock. ``FakeClock.sleep`` advances
that clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from reactors.orchestrate import (
    JobOutcome,
    MinionReturn,
    RunbookError,
    RunbookResult,
    StepNotice,
    find_runbook,
    load_runbook,
    run_runbook,
)
from reactors.runbook import Runbook, unknown_notify_target
from saline.errors import SalineError, TargetError
from saline.targeting import match_minions

FRONTENDS = {f"fe{i}": {"role": "frontend"} for i in range(1, 7)}
BACKENDS = {f"be{i}": {"role": "backend"} for i in range(1, 4)}


@dataclass(frozen=True)
class Reply:
    """A scripted answer: ``ok``, ``fail``, ``timeout`` or ``unreachable``."""

    kind: str = "ok"
    ret: Any = True


class Call(NamedTuple):
    seq: int
    at: float  # fake clock time when the job started
    target: str
    tgt_type: str
    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float
    minions: list[str]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeRunner:
    """Minions id -> grains; ``script[(minion, fun)]`` is a Reply or a list used in turn."""

    minions: dict[str, dict[str, Any]]
    clock: FakeClock
    script: dict[tuple[str, str], Reply | list[Reply]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: seconds of fake time each job takes
    job_seconds: float = 0.0
    #: raised by run() after recording the call
    error: SalineError | None = None
    #: run() returns an outcome that names no minion at all
    silent: bool = False
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def match(self, target: str, tgt_type: str) -> list[str]:
        return match_minions(target, tgt_type, self.minions)[::-1]  # any order

    def reply(self, minion: str, fun: str) -> Reply:
        scripted = self.script.get((minion, fun), Reply())
        if isinstance(scripted, list):
            return scripted.pop(0) if len(scripted) > 1 else scripted[0]
        return scripted

    async def run(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> JobOutcome:
        minions = sorted(self.match(target, tgt_type))
        seq = next(self.counter)
        self.calls.append(
            Call(seq, self.clock(), target, tgt_type, fun, args, kwargs, timeout, minions)
        )
        self.clock.now += self.job_seconds
        if self.error is not None:
            raise self.error
        outcome = JobOutcome(jid=f"j{seq}")
        if self.silent:
            return outcome
        for minion in minions:
            reply = self.reply(minion, fun)
            if reply.kind in ("ok", "fail"):
                ok = reply.kind == "ok"
                outcome.returns[minion] = MinionReturn(ok, 0 if ok else 1, reply.ret)
            failures = {"fail": outcome.failed, "timeout": outcome.timed_out}
            failures["unreachable"] = outcome.not_reached
            failures.get(reply.kind, []).append(minion)
        return outcome

    def targets(self, fun: str | None = None) -> list[str]:
        return [c.target for c in self.calls if fun is None or c.fun == fun]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def runner(clock: FakeClock) -> FakeRunner:
    return FakeRunner({**FRONTENDS, **BACKENDS}, clock)


def execute(
    runbook: Runbook, runner: FakeRunner, *, vars: dict[str, Any] | None = None, test: bool = False
) -> RunbookResult:
    return asyncio.run(
        run_runbook(
            runbook, runner, vars=vars, test=test, sleep=runner.clock.sleep, clock=runner.clock
        )
    )


def rollout(batch: int, failhard: bool = True, target: str = "fe*") -> Runbook:
    return load_runbook(
        f"""
name: rollout
steps:
  - name: upgrade
    run: {{target: "{target}", function: cmd.run, args: [upgrade]}}
    batch: {batch}
    failhard: {str(failhard).lower()}
  - name: after
    run: {{target: be1, function: test.ping}}
"""
    )


# --- batching and failhard -------------------------------------------------------------------


def test_batch_one_is_strictly_serial_in_sorted_order(runner: FakeRunner) -> None:
    runner.job_seconds = 1.0
    result = execute(rollout(batch=1, target="fe[312]"), runner)
    upgrade = result.steps[0]
    assert runner.targets("cmd.run") == ["fe1", "fe2", "fe3"]
    assert {c.tgt_type for c in runner.calls if c.fun == "cmd.run"} == {"list"}
    assert [c.at for c in runner.calls] == [0.0, 1.0, 2.0, 3.0]  # one after another
    assert upgrade.batches == [["fe1"], ["fe2"], ["fe3"]]
    assert upgrade.jids == ["j0", "j1", "j2"]
    assert upgrade.result is True and upgrade.duration_ms == 3000
    assert "in 3 batches of 1" in upgrade.comment
    assert result.success and result.stopped_at is None


def test_batch_two_groups_minions(runner: FakeRunner) -> None:
    runner.minions = {m: g for m, g in runner.minions.items() if m != "fe6"}
    result = execute(rollout(batch=2), runner)
    assert runner.targets("cmd.run") == ["fe1,fe2", "fe3,fe4", "fe5"]
    assert result.steps[0].batches == [["fe1", "fe2"], ["fe3", "fe4"], ["fe5"]]


def test_unbatched_step_is_one_job_by_its_own_target(runner: FakeRunner) -> None:
    runbook = load_runbook(
        "name: x\nsteps:\n  - run: {target: 'G@role:backend', tgt_type: compound, function: t.f}"
    )
    result = execute(runbook, runner)
    assert [(c.target, c.tgt_type) for c in runner.calls] == [("G@role:backend", "compound")]
    assert result.steps[0].batches == [["be1", "be2", "be3"]]
    assert result.steps[0].name == "step 1"


def test_failhard_stops_at_first_failed_batch(runner: FakeRunner) -> None:
    # The Salt bug: a batched rollout carried on after a failed batch. Batch 2 fails here,
    # so batch 3 and every later step must never be called.
    runner.script[("fe3", "cmd.run")] = Reply("fail", "boom")
    result = execute(rollout(batch=2), runner)
    assert runner.targets() == ["fe1,fe2", "fe3,fe4"]
    upgrade = result.steps[0]
    assert upgrade.result is False
    assert upgrade.batches == [["fe1", "fe2"], ["fe3", "fe4"]]
    assert upgrade.failed == {"fe3": "failed (retcode 1): boom"}  # what it said, too
    assert "batch 2 of 3 failed" in upgrade.comment
    assert "stopped before 2 more minion(s): fe5, fe6" in upgrade.comment
    assert not result.success
    assert result.stopped_at == "upgrade"
    assert result.not_started == ["after"]
    assert [s.name for s in result.steps] == ["upgrade"]


def test_failhard_false_runs_every_batch_and_the_next_steps(runner: FakeRunner) -> None:
    runner.script[("fe2", "cmd.run")] = Reply("fail")
    result = execute(rollout(batch=2, failhard=False), runner)
    assert runner.targets() == ["fe1,fe2", "fe3,fe4", "fe5,fe6", "be1"]
    assert result.steps[0].result is False
    assert "failed on 1 of 6 minion(s): fe2" in result.steps[0].comment
    assert result.steps[1].result is True
    assert not result.success
    assert result.stopped_at is None


@pytest.mark.parametrize(
    ("kind", "why"), [("timeout", "timed out"), ("unreachable", "not reached")]
)
def test_timed_out_and_not_reached_are_failures(runner: FakeRunner, kind: str, why: str) -> None:
    runner.script[("fe1", "cmd.run")] = Reply(kind)
    result = execute(rollout(batch=1), runner)
    assert runner.targets() == ["fe1"]
    assert result.steps[0].failed == {"fe1": why}
    assert result.stopped_at == "upgrade"


def test_minion_missing_from_outcome_counts_as_not_reached(runner: FakeRunner) -> None:
    runner.silent = True
    result = execute(rollout(batch=3), runner)
    assert result.steps[0].failed == dict.fromkeys(["fe1", "fe2", "fe3"], "not reached (no answer)")
    assert len(runner.calls) == 1


def test_runner_error_fails_the_step(runner: FakeRunner) -> None:
    runner.error = TargetError("master refused the target")
    result = execute(rollout(batch=6), runner)
    assert result.steps[0].failed == dict.fromkeys(
        FRONTENDS, "not reached (master refused the target)"
    )
    assert result.stopped_at == "upgrade" and len(runner.calls) == 1


def test_target_matching_nothing_fails_without_a_job(runner: FakeRunner) -> None:
    result = execute(rollout(batch=1, target="db*"), runner)
    assert runner.calls == []
    assert result.steps[0].comment == "target 'db*' (glob) matched no minions"
    assert result.stopped_at == "upgrade"


# --- state steps and test mode ---------------------------------------------------------------

STATE_RUNBOOK = """
name: mixed
steps:
  - name: upgrade
    run: {target: fe1, function: cmd.run, args: [upgrade]}
  - name: migrate
    state: {target: "G@role:frontend and not fe1", tgt_type: compound, states: [a.b, c]}
    batch: 5
  - name: wait
    wait_for: {target: be1, function: cluster.status, condition: ret, interval: 2s}
"""


def test_state_step_applies_states_with_test_false(runner: FakeRunner) -> None:
    result = execute(load_runbook(STATE_RUNBOOK), runner)
    state_calls = [c for c in runner.calls if c.fun == "state.apply"]
    assert [(c.target, c.args, c.kwargs) for c in state_calls] == [
        ("fe2,fe3,fe4,fe5,fe6", ["a.b", "c"], {"test": False}),
    ]
    assert result.success and [s.result for s in result.steps] == [True, True, True]


def test_test_mode_plans_run_steps_and_tests_states(runner: FakeRunner) -> None:
    runner.script[("fe3", "state.apply")] = Reply("ok", [{"result": None}, {"result": True}])
    result = execute(load_runbook(STATE_RUNBOOK), runner, test=True)
    assert [c.fun for c in runner.calls] == ["state.apply"]  # no cmd.run, no polling
    assert runner.calls[0].kwargs == {"test": True}
    upgrade, migrate, wait = result.steps
    assert upgrade.result is None and upgrade.comment == "would run cmd.run on fe1"
    assert upgrade.jids == [] and upgrade.batches == [["fe1"]]
    assert migrate.result is None and migrate.comment == "state.apply (test) would change fe3"
    assert wait.result is None and wait.comment.startswith("would wait for cluster.status on be1")
    assert result.test and result.success


def test_test_mode_state_without_changes_is_true(runner: FakeRunner) -> None:
    runner.script[("fe2", "state.apply")] = Reply("ok", [{"result": True}])
    result = execute(load_runbook(STATE_RUNBOOK), runner, test=True)
    assert result.steps[1].result is True
    assert "no changes" in result.steps[1].comment


# --- wait_for --------------------------------------------------------------------------------

WAIT = """
name: wait
steps:
  - name: wait for the cluster
    wait_for:
      target: "be*"
      function: chef_backend.cluster_status
      condition: "ret.healthy == true"
      interval: 2s
      timeout: 10s
"""


@pytest.fixture
def healthy(runner: FakeRunner) -> FakeRunner:
    for minion in BACKENDS:
        runner.script[(minion, "chef_backend.cluster_status")] = Reply("ok", {"healthy": True})
    return runner


@pytest.mark.usefixtures("healthy")
def test_wait_for_succeeds_after_polls(runner: FakeRunner, clock: FakeClock) -> None:
    sick, well = Reply("ok", {"healthy": False}), Reply("ok", {"healthy": True})
    runner.script[("be2", "chef_backend.cluster_status")] = [sick, sick, well]
    result = execute(load_runbook(WAIT), runner)
    step = result.steps[0]
    assert len(runner.calls) == 3
    assert {c.target for c in runner.calls} == {"be1,be2,be3"}
    assert [c.at for c in runner.calls] == [0.0, 2.0, 4.0]
    assert clock.sleeps == [2.0, 2.0]
    assert step.result is True and "after 3 poll(s) (4s)" in step.comment
    assert step.returns["be2"] == {"healthy": True}
    assert step.duration_ms == 4000


@pytest.mark.usefixtures("healthy")
def test_wait_for_fails_at_timeout(runner: FakeRunner, clock: FakeClock) -> None:
    runner.script[("be3", "chef_backend.cluster_status")] = Reply("ok", {"healthy": False})
    runner.script[("be1", "chef_backend.cluster_status")] = Reply("timeout")
    result = execute(load_runbook(WAIT), runner)
    step = result.steps[0]
    assert [c.at for c in runner.calls] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert clock.now == 10.0
    assert step.result is False
    assert step.comment.startswith("timed out after 10s (6 polls) waiting for")
    assert "be3: condition false (ret: {'healthy': False})" in step.comment
    assert step.failed == {"be1": "timed out", "be3": "condition false (ret: {'healthy': False})"}
    assert result.stopped_at == "wait for the cluster"


@pytest.mark.usefixtures("healthy")
def test_wait_for_last_sleep_ends_at_deadline(runner: FakeRunner, clock: FakeClock) -> None:
    runner.job_seconds = 1.5
    runner.script[("be1", "chef_backend.cluster_status")] = Reply("ok", {"healthy": False})
    execute(load_runbook(WAIT), runner)
    assert [c.at for c in runner.calls] == [0.0, 3.5, 7.0, 10.0]
    assert clock.sleeps == [2.0, 2.0, 1.5]  # the third poll ends at 8.5; the deadline is 10
    assert runner.calls[-1].timeout == 1.0  # at the deadline a poll still gets a second


@pytest.mark.usefixtures("healthy")
def test_wait_for_condition_error_keeps_waiting_and_is_reported(runner: FakeRunner) -> None:
    runner.script[("be1", "chef_backend.cluster_status")] = [
        Reply("ok", "starting"),
        Reply("ok", {"healthy": True}),
    ]
    result = execute(load_runbook(WAIT), runner)
    assert result.steps[0].result is True and len(runner.calls) == 2

    runner.script[("be1", "chef_backend.cluster_status")] = Reply("ok", "starting")
    failed = execute(load_runbook(WAIT), runner).steps[0]
    assert "be1: condition error" in failed.comment
    assert "has no attribute 'healthy'" in failed.comment


# --- templating and when ---------------------------------------------------------------------

TEMPLATED = """
name: templated
vars: {reference: fe1, command: upgrade}
steps:
  - name: upgrade the reference
    run:
      target: "{{ vars.reference }}"
      function: cmd.run
      args: ["chef-server-ctl {{ vars.command }}"]
      kwargs: {cwd: "/srv/{{ vars.reference }}", retries: 3}
  - name: the others
    state: {target: "G@role:frontend and not {{ vars.reference }}", tgt_type: compound,
            states: [chef_frontend.migration_level]}
"""


def test_templating_uses_default_vars(runner: FakeRunner) -> None:
    execute(load_runbook(TEMPLATED), runner)
    first, second = runner.calls
    assert (first.target, first.args) == ("fe1", ["chef-server-ctl upgrade"])
    assert first.kwargs == {"cwd": "/srv/fe1", "retries": 3}
    assert second.minions == ["fe2", "fe3", "fe4", "fe5", "fe6"]


def test_caller_vars_override_defaults_as_values_only(runner: FakeRunner) -> None:
    execute(load_runbook(TEMPLATED), runner, vars={"reference": "fe4", "command": "{{ 7 * 7 }}"})
    first, second = runner.calls
    assert first.target == "fe4"
    assert first.args == ["chef-server-ctl {{ 7 * 7 }}"]  # a var is never rendered again
    assert "fe4" not in second.minions and "fe1" in second.minions


def test_undefined_var_names_the_step_before_anything_runs(runner: FakeRunner) -> None:
    text = TEMPLATED.replace("vars.command", "vars.comand")
    with pytest.raises(RunbookError) as err:
        execute(load_runbook(text, "rb.yaml"), runner)
    assert str(err.value).startswith("rb.yaml:5: step 'upgrade the reference': run.args[0]:")
    assert "'comand'" in str(err.value)
    assert runner.calls == []


def test_rendered_target_that_does_not_parse_is_an_error(runner: FakeRunner) -> None:
    with pytest.raises(RunbookError, match=r"step 'the others': state\.target: .*'G@'"):
        execute(load_runbook(TEMPLATED), runner, vars={"reference": "fe1 and G@"})
    assert runner.calls == []


def test_when_false_skips_the_step(runner: FakeRunner) -> None:
    runbook = load_runbook(
        """
name: w
vars: {migrate: false}
steps:
  - name: check
    run: {target: be1, function: test.ping}
  - name: migrate
    when: vars.migrate
    run: {target: fe1, function: cmd.run}
  - name: follow up
    when: "steps.check.result and steps.check.returns.be1 and not steps.migrate.skipped"
    run: {target: fe2, function: cmd.run}
  - name: report
    when: "steps['migrate'].skipped"
    run: {target: fe3, function: cmd.run}
"""
    )
    result = execute(runbook, runner)
    assert runner.targets() == ["be1", "fe3"]
    assert [s.skipped for s in result.steps] == [False, True, True, False]
    assert all(s.result is True for s in result.steps)
    assert result.steps[1].comment == "skipped: when 'vars.migrate' is false"
    execute(runbook, runner, vars={"migrate": True})
    assert runner.targets()[2:] == ["be1", "fe1", "fe2"]


def test_when_that_cannot_be_evaluated_fails_the_step(runner: FakeRunner) -> None:
    runbook = load_runbook(
        "name: w\nsteps:\n  - when: steps.nope.result\n    run: {target: fe1, function: t.f}"
    )
    result = execute(runbook, runner)
    assert runner.calls == []
    assert result.steps[0].result is False
    assert result.steps[0].comment.startswith("when could not be evaluated:")


# --- loading ---------------------------------------------------------------------------------


HEAD = "name: x\nsteps:\n"
RUN = "run: {target: a, function: f}"
WAIT_A = "wait_for: {target: a, function: f, condition: ret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + "  - run: {target: a\n", "rb.yaml:4: invalid YAML"),
        ("- a\n- b\n", "rb.yaml:1: a runbook must be a mapping"),
        (HEAD.replace("\n", " []\n"), "rb.yaml:2: steps: List should have at least 1 item"),
        (f"{HEAD}  - {RUN}\n  - {RUN}\n    batch: 0", "rb.yaml:5: steps[1].batch: Input should"),
        (f"{HEAD}  - {RUN}\n    failhrad: true", "rb.yaml:4: steps[0].failhrad: Extra inputs"),
        (f"{HEAD}  - {RUN}\n    state: {{target: a, states: [s]}}", "rb.yaml:3: steps[0]: a step"),
        (
            f"{HEAD}  - {WAIT_A}, interval: soon}}",
            "rb.yaml:3: steps[0].wait_for.interval: invalid duration 'soon'",
        ),
        (f"{HEAD}  - {WAIT_A}}}\n    batch: 2", "rb.yaml:3: steps[0]: batch does not apply to"),
        (f"{HEAD}\n  - when: 'a =='\n    {RUN}", "rb.yaml:4: steps[0].when: invalid expression"),
        (
            f"{HEAD}  - {RUN}\n  - run: {{target: '{{{{ x', function: f}}",
            "rb.yaml:4: step 'step 2'",
        ),
        (
            f"{HEAD}  - {{name: a, {RUN}}}\n  - {{name: a, {RUN}}}",
            "rb.yaml:2: steps: duplicate step",
        ),
    ],
)
def test_load_errors_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(RunbookError) as err:
        load_runbook(text, "rb.yaml")
    assert str(err.value).startswith(expected)


def test_load_from_file_parses_durations_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "refollow.yaml"
    path.write_text(WAIT.replace("name: wait\n", "").replace("10s", "1.5m"))
    runbook = load_runbook(path)
    spec = runbook.steps[0].wait_for
    assert spec is not None and runbook.name == "refollow" and runbook.steps[0].failhard
    assert (spec.interval, spec.timeout, spec.tgt_type) == (2.0, 90.0, "glob")
    assert runbook.where(0) == f"{path}:3"
    with pytest.raises(RunbookError, match=r"nope\.yaml: cannot read runbook"):
        load_runbook(tmp_path / "nope.yaml")


def test_a_failed_step_says_what_each_minion_reported(runner: FakeRunner) -> None:
    runner.script[("be1", "cmd.run")] = Reply(
        "fail", "Traceback...\nFATAL: password authentication failed"
    )
    runner.script[("be2", "cmd.run")] = Reply(
        "fail", {"stderr": "pg_basebackup: No space left on device"}
    )
    runner.script[("be3", "cmd.run")] = Reply(
        "fail", [{"result": True}, {"result": False, "comment": "WAL segment gone"}]
    )
    runner.script[("fe1", "cmd.run")] = Reply(  # what a function raised, as the minion says it
        "fail", {"error": "execution_error", "message": "pg_basebackup failed: No space left"}
    )
    book = (
        "name: x\nsteps:\n  - run: {target: 'be1,be2,be3,fe1', tgt_type: list, function: cmd.run}\n"
    )
    [step] = execute(load_runbook(book), runner).steps
    assert step.failed.pop("fe1") == (
        "failed (retcode 1): execution_error: pg_basebackup failed: No space left"
    )
    assert step.failed == {
        "be1": "failed (retcode 1): FATAL: password authentication failed",
        "be2": "failed (retcode 1): pg_basebackup: No space left on device",
        "be3": "failed (retcode 1): WAL segment gone",
    }
    assert "be2: failed (retcode 1): pg_basebackup: No space left on device" in step.comment


# --- notify steps ----------------------------------------------------------------------------

NOTIFYING = """
name: ladder
vars: {node: be2}
steps:
  - name: probe
    run: {target: "{{ vars.node }}", function: postgres.replication}
    probe: true
  - name: tell
    notify: {target: pager, message: "rung 1 did not heal {{ vars.node }}"}
  - name: after
    run: {target: be1, function: test.ping}
"""


class Told:
    """A notifier for the orchestrator: records each notice, answers as scripted."""

    def __init__(self, answer: tuple[bool, str] = (True, "notify pager: queued")) -> None:
        self.answer = answer
        self.notices: list[StepNotice] = []

    async def __call__(self, notice: StepNotice) -> tuple[bool, str]:
        self.notices.append(notice)
        return self.answer


def notifying(runner: FakeRunner, told: Told | None, test: bool = False) -> RunbookResult:
    return asyncio.run(
        run_runbook(
            load_runbook(NOTIFYING),
            runner,
            test=test,
            sleep=runner.clock.sleep,
            clock=runner.clock,
            notify=told,
        )
    )


def test_a_notify_step_hands_its_notice_over_with_the_steps_so_far(runner: FakeRunner) -> None:
    runner.script[("be2", "postgres.replication")] = Reply("fail", "out_of_sync")
    told = Told()
    result = notifying(runner, told)
    [notice] = told.notices
    assert (notice.runbook, notice.number, notice.step, notice.target) == (
        "ladder",
        2,
        "tell",
        "pager",
    )
    assert notice.message == "rung 1 did not heal be2"  # rendered over vars
    [probe] = notice.steps
    assert probe["name"] == "probe" and probe["result"] is False
    assert "failed on 1 of 1 minion(s): be2: failed (retcode 1)" in probe["comment"]
    tell = result.steps[1]
    assert (tell.kind, tell.result, tell.comment) == ("notify", True, "notify pager: queued")
    assert runner.targets() == ["be2", "be1"]  # the runbook went on after telling
    assert result.success  # the probe's failure informs, it does not fail the runbook


def test_a_refused_notice_fails_the_step_and_failhard_stops(runner: FakeRunner) -> None:
    told = Told((False, "notify pager: its queue is full; dropped"))
    result = notifying(runner, told)
    assert result.steps[1].result is False
    assert result.steps[1].comment == "notify pager: its queue is full; dropped"
    assert result.stopped_at == "tell" and result.not_started == ["after"]
    assert runner.targets() == ["be2"]


def test_a_notify_step_without_a_notifier_fails_saying_so(runner: FakeRunner) -> None:
    result = notifying(runner, None)
    assert result.steps[1].comment == "notify pager: no notify targets are configured"
    assert result.stopped_at == "tell"


def test_test_mode_tells_no_one(runner: FakeRunner) -> None:
    told = Told()
    result = notifying(runner, told, test=True)
    assert told.notices == []
    assert result.steps[1].result is None
    assert result.steps[1].comment == "would notify pager: 'rung 1 did not heal be2'"


def test_notify_steps_are_checked_at_load() -> None:
    with pytest.raises(
        RunbookError, match=r"<runbook>:3: steps\[0\]: .*batch does not apply to notify"
    ):
        load_runbook("name: x\nsteps:\n  - notify: {target: pager, message: hi}\n    batch: 1\n")
    with pytest.raises(RunbookError, match=r"steps\[0\]\.notify\.target: String should match"):
        load_runbook("name: x\nsteps:\n  - notify: {target: '{{ vars.t }}', message: hi}\n")
    with pytest.raises(RunbookError, match=r"notify\.message: syntax error"):
        load_runbook("name: x\nsteps:\n  - notify: {target: pager, message: '{{ oops'}\n")
    with pytest.raises(RunbookError, match=r"notify\.message: undefined: 'dict object' has no"):
        asyncio.run(
            run_runbook(
                load_runbook(NOTIFYING.replace('vars.node }}"}', 'vars.gone }}"}')),
                FakeRunner({}, FakeClock()),
            )
        )
    runbook = load_runbook(NOTIFYING, "lib/ladder.yaml")
    assert unknown_notify_target(runbook, {"pager"}) is None
    assert unknown_notify_target(runbook, {"chat", "mail"}) == (
        "lib/ladder.yaml:8: step 'tell': notify.target: no notify target 'pager' "
        "(known: chat, mail)"
    )
    assert str(unknown_notify_target(runbook, ())).endswith("(none configured)")


# --- the library -----------------------------------------------------------------------------


def test_find_runbook_maps_names_to_files_first_root_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "chef_ha").mkdir(parents=True)
    (second / "chef_ha" / "refollow.yaml").write_text("name: x")
    (second / "top.yaml").write_text("name: y")
    (first).mkdir()
    (first / "top.yaml").write_text("name: z")
    assert find_runbook("chef_ha/refollow", [first, second]) == (
        second / "chef_ha" / "refollow.yaml"
    )
    assert find_runbook("top", [first, second]) == first / "top.yaml"
    with pytest.raises(RunbookError, match="no runbook 'chef_ha/gone' in"):
        find_runbook("chef_ha/gone", [first, second])


@pytest.mark.parametrize(
    "name", ["../secret", "chef_ha/../../x", "/etc/passwd", "a//b", "top.yaml", "", "a\\b"]
)
def test_find_runbook_refuses_traversal_and_odd_names(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.yaml").write_text("name: s")
    with pytest.raises(RunbookError, match="invalid runbook name"):
        find_runbook(name, [tmp_path / "root"])


def test_find_runbook_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.yaml").write_text("name: s")
    (root / "evil.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(RunbookError, match="leads outside"):
        find_runbook("evil", [root])
