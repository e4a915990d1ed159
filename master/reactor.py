"""The reactor at work on the master: bus events -> rules -> guarded, audited actions.

Each event is decided by the pure engine (``reactors.engine.evaluate``); every decision is
stored before anything runs; a fired reaction runs its actions in order, recording each
one's progress, so a master restarted mid-reaction resumes it without sending any job
twice. Jobs and events a reaction causes carry the causing event and the chain depth.
"""

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from master.jobs import JobRequest
from master.store.base import EventRecord
from master.store.reactions import ReactionRecord, ReactionStore
from reactors.engine import approve, due, evaluate, finish, reject
from reactors.model import Decision, Event, Verdict
from reactors.orchestrate import JobOutcome, MinionReturn, run_runbook
from reactors.rules import Rule, RuleError, load_rules
from reactors.runbook import RunbookError, find_runbook, load_runbook
from reactors.state import ReactorState
from reactors.view import StaticView
from saline.errors import SalineError
from saline.targeting import match_minions
from saline.wire import pack

if TYPE_CHECKING:
    from master.daemon import Master

log = logging.getLogger(__name__)

#: the rules saline ships (reactors/rules/), loaded before the operator's reactor_dirs
SHIPPED_RULES = Path(__file__).resolve().parent.parent / "reactors" / "rules"
#: the runbooks saline ships (reactors/runbooks/), searched after the operator's runbook_roots
SHIPPED_RUNBOOKS = SHIPPED_RULES.parent / "runbooks"
#: beacon names (and beacon:key pairs) the cluster view keeps per minion, and the bytes
#: of their data (packed): beyond either, the oldest observations of that minion go
MAX_OBSERVATIONS_PER_MINION = 256
MAX_OBSERVATION_BYTES_PER_MINION = 1024 * 1024


class MasterJobRunner:
    """Jobs for runbooks and reactions, through the master's job manager."""

    def __init__(self, master: "Master", user: str, chain: tuple[int | None, int, str | None]):
        self.master = master
        self.user = user
        self.chain = chain

    def start(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> Any:
        request = JobRequest(target, tgt_type, fun, args, kwargs, timeout, None, self.user)
        job = self.master.jobs.start(request, self.master.inventory())
        self.master.jobs.chains[job.record.jid] = self.chain
        return job

    async def run(
        self,
        target: str,
        tgt_type: str,
        fun: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> JobOutcome:
        job = self.start(target, tgt_type, fun, args, kwargs, timeout)
        return await self.finish(job)

    async def finish(self, job: Any) -> JobOutcome:
        summary = await self.master.jobs.supervise(job)
        returns = {m: MinionReturn(r.success, r.retcode, r.ret) for m, r in job.returns.items()}
        return JobOutcome(
            jid=job.record.jid,
            returns=returns,
            failed=summary["failed"],
            timed_out=summary["timed_out"],
            not_reached=summary["not_reached"],
        )

    def match(self, target: str, tgt_type: str) -> list[str]:
        return match_minions(target, tgt_type, self.master.inventory())


class RuleIndex:
    """Which rules' ``on`` glob matches a tag: globs compiled once per load, answers cached
    per tag (beacon tags repeat), so a hundred rules cost one dict lookup per event."""

    def __init__(self, rules: list[Rule]) -> None:
        self._globs = [(re.compile(fnmatch.translate(r.on)).match, r) for r in rules]
        self._cache: dict[str, list[Rule]] = {}

    def matching(self, tag: str) -> list[Rule]:
        if not self._globs:
            return []
        hit = self._cache.get(tag)
        if hit is None:
            if len(self._cache) > 10_000:  # job tags are unique: keep the cache bounded
                self._cache.clear()
            hit = self._cache[tag] = [rule for match, rule in self._globs if match(tag)]
        return hit


class Reactor:
    def __init__(self, master: "Master") -> None:
        self.master = master
        config = master.config
        self.dirs = [SHIPPED_RULES, *config.reactor_dirs]
        self.rules: list[Rule] = load_rules([d for d in self.dirs if d.is_dir()])
        self.index = RuleIndex(self.rules)
        self.audit = ReactionStore(config.store_path)
        self.state = ReactorState.model_validate(self.audit.load_state() or {})
        #: minion -> beacon (and beacon:key) -> latest observation: the cluster view
        self.observations: dict[str, dict[str, dict[str, Any]]] = {}
        #: minion -> observation name -> its packed size (the view's byte bound)
        self._view_sizes: dict[str, dict[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: batches the reactor could not decide on (a store write failed): shown in status
        self.failures = 0

    # -- operator controls ---------------------------------------------------------------

    def reload(self) -> str:
        """Load the rules again; a bad file keeps the old rules. :raises RuleError: why."""
        try:
            rules = load_rules([d for d in self.dirs if d.is_dir()])
        except RuleError as e:
            raise RuleError(f"kept the {len(self.rules)} loaded rules: {e}") from e
        self.rules, self.index = rules, RuleIndex(rules)
        return f"loaded {len(rules)} rules"

    @property
    def runbook_roots(self) -> list[Path]:
        return [*self.master.config.runbook_roots, SHIPPED_RUNBOOKS]

    def pause(self, paused: bool) -> None:
        self.state.paused = paused
        self.save_state()

    def approve(self, reaction_id: str, user: str) -> Decision:
        """An operator approves a held reaction; it fires if still safe (else stays held)."""
        held = self.state.awaiting.get(reaction_id)
        decision = approve(self.state, reaction_id, self.view(), time.time())
        log.warning("reaction %s approved by %s: %s", reaction_id, user, decision.reason)
        row = self.audit.get(reaction_id)
        if row is not None and decision.verdict is Verdict.FIRE:
            row.verdict, row.reason, row.outcome, row.finished = (
                "approved",
                decision.reason,
                None,
                None,
            )
            self.audit.save(row)
            self.save_state()
            self._spawn(self.execute(row))
        elif held is not None:
            self.save_state()
        return decision

    def reject(self, reaction_id: str, user: str) -> str:
        sentence = reject(self.state, reaction_id)
        row = self.audit.get(reaction_id)
        if row is not None and row.verdict == Verdict.AWAIT_APPROVAL.value:
            row.outcome, row.finished, row.reason = "rejected", time.time(), f"rejected by {user}"
            self.audit.save(row)
        self.save_state()
        return sentence

    async def orchestrate(
        self, name: str, variables: dict[str, Any], test: bool, user: str
    ) -> dict[str, Any]:
        """``saline orchestrate``: the same engine the reactor's orchestrate action uses."""
        runbook = load_runbook(find_runbook(name, self.runbook_roots))
        problem = runbook.var_problem(variables)
        if problem is not None:
            raise RunbookError(problem)
        runner = MasterJobRunner(self.master, f"orchestrate:{user}", (None, 0, None))
        result = await run_runbook(runbook, runner, vars=variables, test=test)
        return result.model_dump(mode="json")

    def save_state(self) -> None:
        self.audit.save_state(self.state.model_dump(mode="json"))

    def view(self) -> StaticView:
        return StaticView(
            self.master.inventory(), set(self.master.presence.online_ids()), self.observations
        )

    # -- the loop ------------------------------------------------------------------------

    def resume(self) -> None:
        """Reactions a previous master left running: finish them (once, at start)."""
        for record in self.audit.open_reactions():
            log.warning("resuming reaction %s of rule %s", record.id, record.rule)
            self._spawn(self.execute(record, resumed=True))

    async def run(self) -> None:
        sub = self.master.bus.subscribe("*")
        ticker = asyncio.create_task(self._tick())
        try:
            while True:
                batch = [await sub.queue.get()]
                while not sub.queue.empty() and len(batch) < 1000:
                    batch.append(sub.queue.get_nowait())
                try:
                    self.react(batch)
                except Exception:  # a store write failed: keep the subscription, go on
                    self.failures += 1
                    log.exception("the reactor could not decide on %d events", len(batch))
        finally:
            ticker.cancel()
            self.master.bus.unsubscribe(sub)

    def react(self, events: list[EventRecord]) -> list[Decision]:
        """Decide on a batch of stored events; record every decision; start fired ones."""
        view: StaticView | None = None  # built only if some rule matches (5,000 keys: not free)
        decisions: list[tuple[Decision, EventRecord]] = []
        depth = self.master.config.reactor_max_depth
        for record in events:
            self.observe(record)
            matching = self.index.matching(record.tag)
            if not matching:
                continue
            view = view or self.view()
            for rule in matching:  # one rule at a time: a rule that raises spoils no other
                decisions.append((self._decide(record, rule, view, depth), record))
        if decisions:
            self.record(decisions)
        return [d for d, _ in decisions]

    def _decide(self, record: EventRecord, rule: Rule, view: StaticView, depth: int) -> Decision:
        """The engine's decision for one rule, or a ``failed`` one carrying the error."""
        now = time.time()
        try:
            [decision] = evaluate(
                _as_event(record), [rule], view, self.state, now, max_chain_depth=depth
            )
        except Exception as e:  # a bug in a rule, guard or template must not stop the reactor
            log.exception("rule %s raised on event %s (seq %s)", rule.name, record.tag, record.seq)
            return Decision(
                verdict=Verdict.FAILED,
                reason=f"deciding raised {type(e).__name__}: {str(e)[:500]}",
                rule=rule.name,
                event_id=str(record.seq),
                event_tag=record.tag,
                event_depth=record.depth,
                at=now,
            )
        return decision

    def record(self, decisions: list[tuple[Decision, EventRecord]]) -> None:
        rows = [_row(d, e) for d, e in decisions]
        self.audit.save_many(rows)  # every decision is durable before any action runs
        self.save_state()
        self.master.bus.publish_records([_audit_event(d, e) for d, e in decisions])
        for (decision, _), row in zip(decisions, rows, strict=True):
            if decision.verdict is Verdict.FIRE:
                self._spawn(self.execute(row))

    async def _tick(self) -> None:
        """Once a second: trailing (once_after) reactions whose quiet period has passed."""
        while True:
            await asyncio.sleep(1.0)
            try:
                decided = due(self.state, self.rules, self.view(), time.time())
                if decided:
                    self.record([(d, EventRecord(d.event_tag, {}, None, d.at)) for d in decided])
            except Exception:
                self.failures += 1
                log.exception("the reactor's timer could not decide on trailing reactions")

    def observe(self, record: EventRecord) -> None:
        parts = record.tag.split("/")
        if len(parts) < 5 or parts[0] != "saline" or parts[1] != "beacon":
            return
        minion, beacon, state = parts[2], parts[3], parts[4]
        seen = {**record.data, "state": state, "ts": record.ts}
        by_beacon = self.observations.setdefault(minion, {})
        sizes = self._view_sizes.setdefault(minion, {})
        size = len(pack(record.data)) + 64
        keyed = record.data.get("key")
        names = [beacon] if keyed is None else [beacon, f"{beacon}:{str(keyed)[:128]}"]
        for name in names:
            by_beacon.pop(name, None)
            sizes.pop(name, None)
            by_beacon[name] = seen
            sizes[name] = size
        # bounded per minion in entries and bytes: the oldest observations go first
        while len(by_beacon) > len(names) and (
            len(by_beacon) > MAX_OBSERVATIONS_PER_MINION
            or sum(sizes.values()) > MAX_OBSERVATION_BYTES_PER_MINION
        ):
            oldest = next(iter(by_beacon))
            del by_beacon[oldest], sizes[oldest]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- running a reaction ----------------------------------------------------------------

    async def execute(self, row: ReactionRecord, resumed: bool = False) -> None:
        ok = True
        for index, action in enumerate(row.actions):
            progress = row.progress.get(index, {})
            if progress.get("state") in ("done", "failed"):
                ok = ok and progress["state"] == "done"
                continue
            try:
                if progress.get("state") == "started":
                    done, detail = await self._resume_action(row, index, progress)
                else:
                    done, detail = await self._run_action(row, index, action)
            except (SalineError, ValueError, KeyError) as e:
                done, detail = False, str(e)
            except Exception as e:  # a bug: the reaction fails with the error, the master lives
                log.exception("action %d of reaction %s raised", index, row.id)
                done, detail = False, f"raised {type(e).__name__}: {str(e)[:500]}"
            row.progress[index] = {
                **row.progress.get(index, {}),
                "state": "done" if done else "failed",
                "detail": detail,
            }
            self.audit.save(row)
            if not done:
                ok = False
                break
        row.outcome, row.finished = ("ok" if ok else "failed"), time.time()
        self.audit.save(row)
        sentence = finish(self.state, row.id, time.time(), ok)
        self.save_state()
        log.info("%s", sentence)
        suffix = "finished" if ok else "failed"
        self.master.bus.publish_records(
            [
                EventRecord(
                    f"saline/reactor/{row.rule}/{suffix}",
                    {"reaction": row.id, "outcome": row.outcome, "reason": sentence},
                    None,
                    0,
                    cause=row.event_seq,
                    depth=_depth(row),
                    rule=row.rule,
                )
            ]
        )

    async def _run_action(
        self, row: ReactionRecord, index: int, action: dict[str, Any]
    ) -> tuple[bool, str]:
        spec = action["action"]
        chain = (row.event_seq, int(action["depth"]), row.rule)
        runner = MasterJobRunner(self.master, f"reactor:{row.rule}", chain)
        kind = spec["kind"]
        if kind == "fire":
            [event] = self.master.bus.publish_records(
                [EventRecord(spec["tag"], spec["data"], None, 0, None, *chain)]
            )
            return True, f"fired {spec['tag']} (seq {event.seq})"
        if kind == "orchestrate":
            row.progress[index] = {"state": "started"}
            self.audit.save(row)
            runbook = load_runbook(find_runbook(spec["runbook"], self.runbook_roots))
            result = await run_runbook(runbook, runner, vars=spec["vars"], test=spec["test"])
            return result.success, f"runbook {runbook.name}: " + (
                "succeeded" if result.success else f"stopped at {result.stopped_at}"
            )
        if kind == "run":
            fun, args, kwargs = spec["function"], spec["args"], spec["kwargs"]
        else:
            fun, args, kwargs = "state.apply", spec["states"], {"test": spec["test"]}
        job = runner.start(
            spec["target"], spec["tgt_type"], fun, args, kwargs, self.master.config.job_timeout
        )
        # the jid is durable before the job is sent: after a restart it is awaited, not resent
        row.progress[index] = {"state": "started", "jid": job.record.jid}
        self.audit.save(row)
        outcome = await runner.finish(job)
        return _judge(outcome, fun)

    async def _resume_action(
        self, row: ReactionRecord, index: int, progress: dict[str, Any]
    ) -> tuple[bool, str]:
        jid = progress.get("jid")
        if jid is None:
            return False, "interrupted by a master restart; not run again"
        job = self.master.store.get_job(jid)
        if job is None:
            return False, f"job {jid} was never stored"
        expected = set(job.minions) - set(job.missing)
        deadline = job.created + job.timeout
        while time.time() < deadline:
            if expected <= set(self.master.store.job_returns(jid)):
                break
            await asyncio.sleep(0.2)
        returns = self.master.store.job_returns(jid)
        failed = sorted(m for m in expected if m not in returns or not returns[m].success)
        if failed:
            return False, f"job {jid}: no success from {', '.join(failed)}"
        return True, f"job {jid} (resumed): {len(returns)} succeeded"

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.audit.close()


def _judge(outcome: JobOutcome, fun: str) -> tuple[bool, str]:
    problems = outcome.problems(outcome.returns)
    if not outcome.returns and not problems:
        return False, f"job {outcome.jid}: the target matched no minion"
    if problems:
        listed = ", ".join(f"{m} {why}" for m, why in problems.items())
        return False, f"job {outcome.jid} ({fun}): {listed}"
    return True, f"job {outcome.jid} ({fun}): {len(outcome.returns)} succeeded"


def _as_event(record: EventRecord) -> Event:
    return Event(
        id=str(record.seq),
        tag=record.tag,
        data=record.data,
        minion=record.minion,
        ts=record.ts,
        depth=record.depth,
        cause=None if record.cause is None else str(record.cause),
        rule=record.rule,
    )


def _row(decision: Decision, event: EventRecord) -> ReactionRecord:
    return ReactionRecord(
        id=decision.reaction_id or uuid.uuid4().hex,
        event_seq=event.seq,
        event_tag=event.tag,
        rule=decision.rule,
        verdict=decision.verdict.value,
        reason=decision.reason,
        key=decision.key or "",
        actions=[a.model_dump(mode="json") for a in decision.actions],
        outcome=None if decision.verdict is Verdict.FIRE else decision.verdict.value,
        created=time.time(),
        finished=None if decision.verdict is Verdict.FIRE else time.time(),
    )


def _audit_event(decision: Decision, event: EventRecord) -> EventRecord:
    audit = decision.audit_event()
    return EventRecord(
        audit.tag, audit.data, None, 0, cause=event.seq, depth=audit.depth, rule=audit.rule
    )


def _depth(row: ReactionRecord) -> int:
    return max((int(a.get("depth", 1)) for a in row.actions), default=1)
