"""The reactor at work on the master: bus events -> rules -> guarded, audited reactions.

Each event is decided by the pure engine (``reactors.engine.evaluate``), rule by rule;
every decision is stored before anything runs; fired reactions run in
``master/reactions.py``. The rules and the runbooks they name are loaded together
(``reactors/policy.py``), at start and on reload.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from master.bus import EventBus
from master.event_feed import StoreFeed
from master.forward import request_id
from master.inventory import Inventory
from master.jobs import JobManager
from master.leadership import Leader, Solo
from master.metrics import MasterMetrics
from master.notify import Notifier
from master.observations import Observations
from master.reactions import ReactionExecutor
from master.store.base import EventRecord, Fenced, ReactionRecord, Store
from reactors.engine import approve, due, evaluate, finish, forget, reject
from reactors.model import Decision, Event, Verdict
from reactors.policy import Policy, load_policy
from reactors.rules import Rule, RuleError
from reactors.runbook import Runbook
from reactors.state import ReactorState
from reactors.view import StaticView

log = logging.getLogger(__name__)

#: seconds between looks for trailing (once_after) reactions whose quiet period passed
TICK = 1.0
#: reactions of a rule read back to find the last fix of a flapping key
FINDINGS_LOOKBACK = 50
#: characters of a decision's reason with the findings added
MAX_REASON = 4000
#: most events decided in one pass
BATCH = 1000
#: seconds between saves of the replay cursor while events match no rule
CURSOR_SAVE = 1.0


class Reactor:
    def __init__(
        self,
        *,
        store: Store,
        bus: EventBus,
        inventory: Inventory,
        jobs: JobManager,
        rule_paths: list[Path],
        runbook_roots: list[Path],
        max_depth: int,
        state_exists: Callable[[str], bool] | None = None,
        ships_states: Path | None = None,
        notifier: Notifier | None = None,
        metrics: MasterMetrics | None = None,
        leader: Leader | None = None,
    ) -> None:
        self.store = store
        #: whether this master may decide and act, and the epoch its writes carry
        self.leader: Leader = leader if leader is not None else Solo("master")
        #: decisions by rule and verdict, escalations, finished reactions
        self.metrics = metrics if metrics is not None else MasterMetrics()
        self.bus = bus
        self.inventory = inventory
        self.max_depth = max_depth
        self.state_exists = state_exists
        self.ships_states = ships_states
        self.rule_paths, self.runbook_roots = rule_paths, runbook_roots
        #: the notify targets' names a rule's notify action may use (checked at load)
        self.notify_names = notifier.names if notifier is not None else set()
        self.policy = self._load(rule_paths, runbook_roots)  # a bad rule stops the start
        self.state = ReactorState.model_validate(store.load_reactor_state() or {})
        self.observations = Observations()
        self.executor = ReactionExecutor(
            store, bus, jobs, inventory, self.policy_runbook, self._finished, self._epoch
        )
        self.executor.notify = notifier.action if notifier is not None else None
        self.executor.notify_step = notifier.step if notifier is not None else None
        self._tasks: set[asyncio.Task[None]] = set()
        #: answers a standby's forwarded request (``master/forward.py``), on the leader
        self.on_request: Callable[[EventRecord], Coroutine[Any, Any, None]] | None = None
        #: batches the reactor could not decide on (a store write failed): shown in status
        self.failures = 0

    @property
    def rules(self) -> list[Rule]:
        return self.policy.rules

    def policy_runbook(self, name: str) -> Runbook:
        return self.policy.runbook(name)

    # -- operator controls ---------------------------------------------------------------

    def _load(self, rule_paths: list[Path], runbook_roots: list[Path]) -> Policy:
        rule_dirs = [p for p in rule_paths if p.is_dir()]
        return load_policy(
            rule_dirs, runbook_roots, self.state_exists, self.ships_states, self.notify_names
        )

    def reload(
        self, rule_paths: list[Path] | None = None, runbook_roots: list[Path] | None = None
    ) -> str:
        """Load rules and runbooks again (from new places, when given); a bad one keeps the
        old. :raises RuleError: why."""
        rule_paths = rule_paths or self.rule_paths
        runbook_roots = runbook_roots or self.runbook_roots
        try:
            policy = self._load(rule_paths, runbook_roots)
        except RuleError as e:
            raise RuleError(f"kept the {len(self.rules)} loaded rules: {e}") from e
        self.policy, self.rule_paths, self.runbook_roots = policy, rule_paths, runbook_roots
        return f"loaded {len(policy.rules)} rules, {len(policy.runbooks)} runbooks"

    def pause(self, paused: bool) -> None:
        self.state.paused = paused
        self.save_state()

    def approve(self, reaction_id: str, user: str) -> Decision:
        """An operator approves a held reaction; it fires if still safe (else stays held)."""
        held = self.state.awaiting.get(reaction_id)
        decision = approve(self.state, reaction_id, self.view(), time.time())
        log.warning("reaction %s approved by %s: %s", reaction_id, user, decision.reason)
        row = self.store.get_reaction(reaction_id)
        if row is not None and decision.verdict is Verdict.FIRE:
            row.verdict, row.reason, row.outcome, row.finished = (
                "approved",
                decision.reason,
                None,
                None,
            )
            self.store.save_reactions([row])
            self.save_state()
            self._spawn(self.executor.execute(row))
        elif held is not None:
            self.save_state()
        return decision

    def reject(self, reaction_id: str, user: str) -> str:
        sentence = reject(self.state, reaction_id)
        row = self.store.get_reaction(reaction_id)
        if row is not None and row.verdict == Verdict.AWAIT_APPROVAL.value:
            row.outcome, row.finished, row.reason = "rejected", time.time(), f"rejected by {user}"
            self.store.save_reactions([row])
        self.save_state()
        return sentence

    def forget(self, rule: str | None, key: str | None) -> str:
        """Forget throttles, cooldowns and flap history (see :func:`reactors.engine.forget`)."""
        count = forget(self.state, rule, key)
        self.save_state()
        named = (("rule", rule), ("key", key))
        scope = " ".join(f"{name} {value!r}" for name, value in named if value)
        return f"forgot the history of {count} rule key(s){' for ' + scope if scope else ''}"

    def save_state(self) -> None:
        self.store.save_reactor_state(self.state.model_dump(mode="json"), epoch=self._epoch())

    def current_state(self) -> ReactorState:
        """The reactor state in use: this master's while it leads (or is the only one), else
        the leader's as last stored (a standby's own copy is stale)."""
        if self.leader.leading():
            return self.state
        return ReactorState.model_validate(self.store.load_reactor_state() or {})

    def view(self) -> StaticView:
        return StaticView(
            self.inventory.targets(), set(self.inventory.online_ids()), self.observations.by_minion
        )

    # -- the loop ------------------------------------------------------------------------

    def resume(self) -> None:
        """Reactions a previous master left running: finish them (once, at start)."""
        for record in self.store.open_reactions():
            log.warning("resuming reaction %s of rule %s", record.id, record.rule)
            self._spawn(self.executor.execute(record))

    async def run(self) -> None:
        """Decide on events as they come: from this master's bus when it is the only one,
        else from the shared store, and only while this master leads."""
        ticker = asyncio.create_task(self._tick())
        try:
            if isinstance(self.leader, Solo):
                await self._follow_bus()
            else:
                await self._follow_store()
        finally:
            ticker.cancel()

    async def _follow_bus(self) -> None:
        sub = self.bus.subscribe("*")
        try:
            while True:
                batch = [await sub.queue.get()]
                while not sub.queue.empty() and len(batch) < BATCH:
                    batch.append(sub.queue.get_nowait())
                self._react_guarded(batch)
        finally:
            self.bus.unsubscribe(sub)

    async def _follow_store(self) -> None:
        """Every master observes every stored event (its cluster view); the leader also
        decides. Taking over, it loads the reactor state its predecessor stored, replays the
        events after that state's cursor (skipping those already decided: none twice) and
        finishes the reactions left in flight; losing the lead, it stops its reactions."""
        feed = StoreFeed(self.store, self.bus)
        leading, saved = False, 0.0
        try:
            while True:
                if self.leader.leading() != leading:
                    leading = not leading
                    if leading:
                        self._take_over(feed)
                    else:
                        self._step_down()
                batch = await feed.next()
                if not self.leader.leading():
                    for record in batch:
                        self.observations.observe(record)
                    continue
                if not leading:
                    continue  # took over between the two looks: the replay covers the batch
                self._answer_requests(batch)
                decided = self.store.decided_events([r.seq for r in batch if r.seq is not None])
                self._react_guarded([r for r in batch if r.seq not in decided])
                self.state.cursor = feed.low
                if time.monotonic() - saved >= CURSOR_SAVE:
                    self._save_guarded()
                    saved = time.monotonic()
        finally:
            feed.close()

    def _take_over(self, feed: StoreFeed) -> None:
        self.state = ReactorState.model_validate(self.store.load_reactor_state() or {})
        if self.state.cursor is None:  # the first leader: decide from now on, not history
            self.state.cursor = self.store.last_event_seq()
        feed.reset(self.state.cursor)
        log.warning("leading at epoch %d: replaying events after seq %d", self._epoch(), feed.low)
        self.resume()

    def _answer_requests(self, batch: list[EventRecord]) -> None:
        if self.on_request is None:
            return
        for record in batch:
            if request_id(record) is not None:
                self._spawn(self.on_request(record))

    def _step_down(self) -> None:
        log.warning("no longer leading: stopping %d running reaction(s)", len(self._tasks))
        self.stop()

    def _react_guarded(self, batch: list[EventRecord]) -> None:
        try:
            self.react(batch)
        except Fenced as e:
            self.leader.step_down(str(e))
        except Exception:  # a store write failed: keep the subscription, go on
            self.failures += 1
            log.exception("the reactor could not decide on %d events", len(batch))

    def _save_guarded(self) -> None:
        try:
            self.save_state()
        except Fenced as e:
            self.leader.step_down(str(e))

    def _epoch(self) -> int:
        return self.leader.epoch

    def react(self, events: list[EventRecord]) -> list[Decision]:
        """Decide on a batch of stored events; record every decision; start fired ones."""
        view: StaticView | None = None  # built only if some rule matches (5,000 keys: not free)
        decisions: list[tuple[Decision, EventRecord]] = []
        index = self.policy.index
        for record in events:
            self.observations.observe(record)
            matching = index.matching(record.tag)
            if not matching:
                continue
            view = view or self.view()
            for rule in matching:  # one rule at a time: a rule that raises spoils no other
                decisions.append((self._decide(record, rule, view), record))
        if decisions:
            self.record(decisions)
        return [d for d, _ in decisions]

    def _decide(self, record: EventRecord, rule: Rule, view: StaticView) -> Decision:
        """The engine's decision for one rule, or a ``failed`` one carrying the error."""
        now = time.time()
        try:
            [decision] = evaluate(
                as_event(record), [rule], view, self.state, now, max_chain_depth=self.max_depth
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
        decisions = [(self._with_findings(d), e) for d, e in decisions]
        rows = [_row(d, e, self._epoch()) for d, e in decisions]
        self.store.save_reactions(rows)  # every decision is durable before any action runs
        self.save_state()
        self.bus.publish_records([_audit_event(d, e) for d, e in decisions])
        for decision, _ in decisions:
            self.metrics.decided(decision.rule, decision.verdict.value)
        for (decision, _), row in zip(decisions, rows, strict=True):
            if decision.verdict is Verdict.FIRE:
                self._spawn(self.executor.execute(row))

    def _with_findings(self, decision: Decision) -> Decision:
        """A flapping escalation says what the last fix of that rule and key found (each
        action's detail: a ladder's failed rungs and their errors), so the human it reaches
        need not dig for it. Read from the store: escalations are rare."""
        if decision.verdict is not Verdict.ESCALATE or not decision.reason.startswith("flapping"):
            return decision
        last = next(
            (
                row
                for row in self.store.reaction_history(limit=FINDINGS_LOOKBACK, rule=decision.rule)
                if row.key == (decision.key or "") and row.verdict == "fire" and row.outcome
            ),
            None,
        )
        if last is None:
            return decision
        details = [p.detail for _, p in sorted(last.progress.items()) if p.detail]
        found = "; ".join(details) or "no detail recorded"
        reason = f"{decision.reason}; the last fix ({last.outcome}): {found}"
        return decision.model_copy(update={"reason": reason[:MAX_REASON]})

    async def _tick(self) -> None:
        """Trailing (once_after) reactions whose quiet period has passed."""
        while True:
            await asyncio.sleep(TICK)
            if not self.leader.leading():
                continue
            try:
                decided = due(self.state, self.rules, self.view(), time.time())
                if decided:
                    # the held event (stored, already decided "pending"): the reaction and
                    # its jobs name it as their cause, as every reaction does
                    held = [
                        EventRecord(d.event_tag, {}, None, d.at, _seq(d.event_id)) for d in decided
                    ]
                    self.record(list(zip(decided, held, strict=True)))
            except Exception:
                self.failures += 1
                log.exception("the reactor's timer could not decide on trailing reactions")

    def _finished(self, row: ReactionRecord, ok: bool) -> str:
        sentence = finish(self.state, row.id, time.time(), ok)
        self.save_state()
        self.metrics.reactions_finished.labels(row.rule, "succeeded" if ok else "failed").inc()
        return sentence

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


def as_event(record: EventRecord) -> Event:
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


def _seq(event_id: str) -> int | None:
    return int(event_id) if event_id.isdigit() else None


def _row(decision: Decision, event: EventRecord, epoch: int) -> ReactionRecord:
    fired = decision.verdict is Verdict.FIRE
    return ReactionRecord(
        id=decision.reaction_id or uuid.uuid4().hex,
        event_seq=event.seq,
        event_tag=event.tag,
        rule=decision.rule,
        verdict=decision.verdict.value,
        reason=decision.reason,
        key=decision.key or "",
        actions=list(decision.actions),
        outcome=None if fired else decision.verdict.value,
        created=time.time(),
        finished=None if fired else time.time(),
        epoch=epoch,
    )


def _audit_event(decision: Decision, event: EventRecord) -> EventRecord:
    audit = decision.audit_event()
    return EventRecord(
        audit.tag, audit.data, None, 0, cause=event.seq, depth=audit.depth, rule=audit.rule
    )
