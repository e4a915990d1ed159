"""The notifier: tells people when a fix failed, through the master's ``notify`` targets.

Two ways in, one way out:

* a bus subscriber for the reactor's audit events named in ``notify_on``
  (``saline/reactor/RULE/escalated`` and ``.../failed``): every target is told; and
  ``.../finished`` with outcome ok resolves a PagerDuty incident the same rule and key opened;
* a rule's ``notify`` action (:meth:`Notifier.action`, called by ``master/reactions.py``),
  and a runbook's ``notify`` step (:meth:`Notifier.step`).

Each notice carries the chain read back from the store (event → rule → verdict and reason →
jobs → outcome, and the command line that shows it). Each target has its own bounded queue
and worker: a slow or dead endpoint delays only itself, and a full queue drops (counted).
HTTP and SMTP run in a thread (``asyncio.to_thread``) with the target's timeout, so the
master's loop never waits on them; failures worth another try are retried with doubling
back-off.

Deliveries are deduplicated by reaction id in a journal file, ``data_dir/notify.json``,
rewritten atomically (temporary file, fsync, rename) after each delivery. A store table
would need the store's schema (another part's files); a notice is worth a small file. The
journal also keeps, per target, the seq of the last audit event it handled: a restarted
master replays the audit events it missed since then from the store, and what the journal
records as done is never sent again.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from master.bus import EventBus, Subscription
from master.notify_config import (
    EmailTarget,
    NotifyTarget,
    PagerDutyTarget,
    SlackTarget,
    WebhookTarget,
    resolve_secret,
)
from master.notify_send import DeliveryError, Notice, NoticeKind, dedup_key, render, send
from master.store.base import EventRecord, ReactionRecord, Store
from reactors.orchestrate import StepNotice
from reactors.rules import NotifyAction
from saline.masking import Masker

__all__ = ["DeliveryJournal", "Notifier"]

log = logging.getLogger(__name__)

#: attempts per delivery, and the first back-off (doubled after each failed attempt)
ATTEMPTS = 5
BACKOFF = 2.0
#: notices waiting per target; more are dropped and counted
QUEUE_SIZE = 1000
#: delivery ids the journal remembers (the oldest are forgotten first)
JOURNAL_DONE = 10_000
#: at most this many stored events are read back at start to find missed audit events
REPLAY_MAX = 200_000
REPLAY_PAGE = 1000
#: what becomes of a notice (counted per target)
OUTCOMES = ("sent", "retried", "failed", "dropped", "duplicate")


class DeliveryJournal:
    """``done`` delivery ids (with when), per-target replay ``cursors``, and the PagerDuty
    incidents left ``open`` (``TARGET|dedup_key``), in one JSON file (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, float] = {}
        self.cursors: dict[str, int] = {}
        self.open: dict[str, float] = {}
        self._lock = asyncio.Lock()
        try:
            data = json.loads(path.read_text())
            self.done = {str(k): float(v) for k, v in data.get("done", {}).items()}
            self.cursors = {str(k): int(v) for k, v in data.get("cursors", {}).items()}
            self.open = {str(k): float(v) for k, v in data.get("open", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as e:
            # kept aside for a human; starting empty may repeat a notice, never lose the master
            log.error("notify journal %s unreadable (%s): set aside, starting empty", path, e)
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(".corrupt"))

    def mark_done(self, delivery: str, now: float) -> None:
        self.done[delivery] = now
        if len(self.done) > JOURNAL_DONE:
            for old in sorted(self.done, key=self.done.__getitem__)[: len(self.done) // 10]:
                del self.done[old]

    def advance(self, target: str, seq: int) -> None:
        self.cursors[target] = max(seq, self.cursors.get(target, 0))

    async def save(self) -> None:
        """Write the journal atomically, in a thread (the snapshot is taken on the loop)."""
        data = json.dumps({"done": self.done, "cursors": self.cursors, "open": self.open})
        async with self._lock:
            await asyncio.to_thread(self._write, data.encode())

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _secrets(target: NotifyTarget) -> dict[str, str]:
    """The target's secret fields, files read (:raises ConfigError: a file is unusable)."""
    what = f"notify {target.name}"
    fields: dict[str, str | None] = {}
    if isinstance(target, WebhookTarget):
        fields["secret"] = target.secret
    elif isinstance(target, SlackTarget):
        fields["url"] = target.url
    elif isinstance(target, PagerDutyTarget):
        fields["routing_key"] = target.routing_key
    elif isinstance(target, EmailTarget):
        fields["password"] = target.password
    return {k: resolve_secret(v, f"{what}: {k}") for k, v in fields.items() if v is not None}


class Notifier:
    """The notify part: built with the targets, the store and the bus; :meth:`run` is its loop.

    :raises ConfigError: a secret file is missing, empty, or open to others.
    """

    def __init__(
        self,
        targets: Iterable[NotifyTarget],
        notify_on: Iterable[str],
        store: Store,
        bus: EventBus,
        data_dir: Path,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.notify_on = frozenset(notify_on)
        self.store, self.bus = store, bus
        self.attempts, self.backoff = attempts, backoff
        self.secrets = {name: _secrets(t) for name, t in self.targets.items()}
        #: every secret value of every target, masked in logs and in what is sent
        self.masker = Masker(v for s in self.secrets.values() for v in s.values())
        self.journal = DeliveryJournal(data_dir / "notify.json")
        self.queues: dict[str, asyncio.Queue[Notice]] = {
            name: asyncio.Queue(queue_size) for name in self.targets
        }
        #: ids waiting in a queue: one event seen live and in the replay is queued once
        self._queued: set[str] = set()
        #: sent, retried, failed (given up), dropped (queue full), duplicate (journal said done)
        self.counts: Counter[str] = Counter()
        #: the same, per target
        self.target_counts: dict[str, Counter[str]] = {name: Counter() for name in self.targets}
        self.host = socket.gethostname()
        #: set once subscribed and the replay after a restart is queued
        self.ready = asyncio.Event()
        self._sub: Subscription | None = None
        #: notices a worker has taken and not finished (delivery and journal save)
        self._busy = 0

    @property
    def names(self) -> set[str]:
        """The target names a rule's ``notify`` action may use."""
        return set(self.targets)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe to the reactor's audit events, replay what a previous master missed,
        and deliver, one worker per target."""
        sub = self._sub = self.bus.subscribe("saline/reactor/*")
        workers = [asyncio.create_task(self._worker(name)) for name in self.targets]
        try:
            await self._replay()
            self.ready.set()
            while True:
                event = await sub.queue.get()
                try:
                    self.offer(event)
                except Exception:  # one odd event must not stop notifications
                    log.exception("notify: could not handle %s (seq %s)", event.tag, event.seq)
        finally:
            for worker in workers:
                worker.cancel()
            self.bus.unsubscribe(sub)
            self._sub = None

    def status(self) -> dict[str, dict[str, int]]:
        """Per target: notices queued now, and sent, retried, failed, dropped, duplicate."""
        return {
            name: {
                "queued": self.queues[name].qsize(),
                **{what: self.target_counts[name][what] for what in OUTCOMES},
            }
            for name in self.targets
        }

    def _tally(self, target: str, what: str) -> None:
        self.counts[what] += 1
        self.target_counts[target][what] += 1

    def idle(self) -> bool:
        """Nothing left to do: no audit event waiting, no notice queued or being sent (and
        its journal saved)."""
        waiting = self._sub is not None and not self._sub.queue.empty()
        return not waiting and not self._queued and self._busy == 0

    async def _replay(self) -> None:
        if not any(name in self.journal.cursors for name in self.targets):
            return
        seq = min(self.journal.cursors[n] for n in self.targets if n in self.journal.cursors)
        seen = 0
        while seen < REPLAY_MAX:
            page = self.store.events_since(seq, REPLAY_PAGE)
            for event in page:
                if event.tag.startswith("saline/reactor/"):
                    self.offer(event, replay=True)
            seen += len(page)
            if len(page) < REPLAY_PAGE or page[-1].seq is None:
                return
            seq = page[-1].seq
            await asyncio.sleep(0)
        log.warning("notify: replayed %d events after a restart; older ones skipped", seen)

    def offer(self, event: EventRecord, replay: bool = False) -> int:
        """Queue the notices an audit event calls for; answers how many were queued."""
        parts = event.tag.split("/")
        if len(parts) != 4 or parts[:2] != ["saline", "reactor"]:
            return 0
        rule, what = parts[2], parts[3]
        if what not in self.notify_on and what != "finished":
            return 0
        targets = [
            name
            for name in self.targets
            if (event.seq is None or event.seq > self.journal.cursors.get(name, -1))
            and not (replay and name not in self.journal.cursors)
        ]
        if not targets:
            return 0
        if what in self.notify_on:
            row = self._reaction(event, rule)
            rid = row.id if row is not None else f"event-{event.seq}"
            kind: NoticeKind = "escalated" if what == "escalated" else "failed"
            body = self.chain(kind, rule, row, event)
            key = row.key if row is not None else ""
            notices = [
                Notice(f"{rid}/{kind}/{name}", name, kind, rule, key, body, event.seq)
                for name in targets
            ]
        elif what == "finished" and event.data.get("outcome") == "ok":
            notices = self._resolutions(event, rule, targets)
        else:
            return 0
        return sum(self._enqueue(n) for n in notices)

    def _resolutions(self, event: EventRecord, rule: str, targets: list[str]) -> list[Notice]:
        pagers = [n for n in targets if isinstance(self.targets[n], PagerDutyTarget)]
        if not pagers:
            return []
        row = self._reaction(event, rule)
        if row is None:
            return []
        pd_key = dedup_key(rule, row.key)
        body = self.chain("resolve", rule, row, event)
        return [
            Notice(f"{row.id}/resolve/{name}", name, "resolve", rule, row.key, body, event.seq)
            for name in pagers
            if f"{name}|{pd_key}" in self.journal.open
        ]

    async def action(
        self, row: ReactionRecord, index: int, action: NotifyAction
    ) -> tuple[bool, str]:
        """A rule's ``notify`` action: queue the notice (the reaction does not wait for it)."""
        if action.target not in self.targets:
            return False, f"no notify target {action.target!r}"
        body = self.chain("notify", row.rule, row, None, message=action.message)
        notice = Notice(
            f"{row.id}/{index}/notify/{action.target}",
            action.target,
            "notify",
            row.rule,
            row.key,
            body,
        )
        return self._hand_over(notice)

    async def step(
        self, delivery: str, notice: StepNotice, row: ReactionRecord | None = None
    ) -> tuple[bool, str]:
        """A runbook's ``notify`` step: queue the notice under the dedup id ``delivery``, with
        the steps so far; ``row`` is the reaction that runs the runbook (None: run by hand)."""
        if notice.target not in self.targets:
            return False, f"no notify target {notice.target!r}"
        rule = row.rule if row is not None else f"runbook/{notice.runbook}"
        body = self.chain("notify", rule, row, None, message=notice.message)
        body["runbook"] = {
            "name": notice.runbook,
            "step": notice.step,
            "number": notice.number,
            "steps": self.masker.value(notice.steps),
        }
        if row is None:
            body["link"] = "saline jobs list"
        key = row.key if row is not None else ""
        return self._hand_over(Notice(delivery, notice.target, "notify", rule, key, body))

    def _hand_over(self, notice: Notice) -> tuple[bool, str]:
        if self.journal.done.get(notice.id):
            return True, f"notify {notice.target}: already delivered"
        if notice.id in self._queued:
            return True, f"notify {notice.target}: already queued"
        if not self._enqueue(notice):
            return False, f"notify {notice.target}: its queue is full; dropped"
        return True, f"notify {notice.target}: queued"

    def _enqueue(self, notice: Notice) -> bool:
        if notice.id in self._queued:
            return False
        try:
            self.queues[notice.target].put_nowait(notice)
        except asyncio.QueueFull:
            self._tally(notice.target, "dropped")
            log.warning("notify %s: queue full, dropped %s", notice.target, notice.id)
            return False
        self._queued.add(notice.id)
        return True

    # -- the chain -----------------------------------------------------------------------

    def _reaction(self, event: EventRecord, rule: str) -> ReactionRecord | None:
        """The reaction an audit event is about: by id when it says, else by its cause."""
        rid = event.data.get("reaction") or event.data.get("reaction_id")
        if isinstance(rid, str):
            return self.store.get_reaction(rid)
        if event.cause is None:
            return None
        verdict = event.data.get("verdict")
        for row in self.store.reaction_history(limit=200, rule=rule):
            if row.event_seq == event.cause and (verdict is None or row.verdict == verdict):
                return row
        return None

    def _event(self, seq: int | None) -> EventRecord | None:
        if seq is None:
            return None
        found = self.store.events_since(seq - 1, 1)
        return found[0] if found and found[0].seq == seq else None

    def chain(
        self,
        kind: NoticeKind,
        rule: str,
        row: ReactionRecord | None,
        audit: EventRecord | None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """The notice body: event → rule → verdict (reason) → jobs → outcome, masked."""
        cause = self._event(row.event_seq if row is not None else audit.cause if audit else None)
        event = None
        if cause is not None:
            event = {
                "seq": cause.seq,
                "tag": cause.tag,
                "minion": cause.minion,
                "ts": cause.ts,
                "data": Masker(by_name=True).value(cause.data),
            }
        audit_data = audit.data if audit is not None else {}
        reason = row.reason if row is not None else audit_data.get("reason", "")
        outcome = row.outcome if row is not None else audit_data.get("outcome")
        if kind == "failed" and isinstance(audit_data.get("reason"), str):
            reason = audit_data["reason"]  # the executor's sentence on why the reaction failed
        jobs = []
        if row is not None:
            for index, rendered in enumerate(row.actions):
                progress = row.progress.get(index)
                jobs.append(
                    {
                        "action": index,
                        "kind": rendered.action.kind,
                        "jid": progress.jid if progress else None,
                        "state": progress.state if progress else "not run",
                        "detail": progress.detail if progress else None,
                    }
                )
        word = {"resolve": "healed", "notify": "notice"}.get(kind, kind)
        body: dict[str, Any] = {
            "kind": kind,
            "summary": f"{rule} {word}: {message or reason}"[:1000],
            "reaction": row.id if row is not None else None,
            "rule": rule,
            "key": row.key if row is not None else "",
            "event": event,
            "verdict": row.verdict if row is not None else audit_data.get("verdict"),
            "reason": reason,
            "jobs": jobs,
            "outcome": outcome,
            "link": f"saline reactor history --rule {rule}",
            "master": self.host,
            "ts": time.time(),
        }
        if message is not None:
            body["message"] = message
        masked: dict[str, Any] = self.masker.value(body)
        return masked

    # -- delivery ------------------------------------------------------------------------

    async def _worker(self, name: str) -> None:
        queue = self.queues[name]
        while True:
            notice = await queue.get()
            self._busy += 1
            try:
                await self.deliver(notice)
            except Exception:  # a bug in one delivery must not stop the target's worker
                log.exception("notify %s: delivery %s raised", name, notice.id)
            finally:
                self._queued.discard(notice.id)
                try:
                    if notice.seq is not None:
                        self.journal.advance(name, notice.seq)
                        await self.journal.save()
                finally:
                    self._busy -= 1

    async def deliver(self, notice: Notice) -> bool:
        """Send ``notice`` unless the journal has it as done, retrying what may pass later;
        answers whether it was delivered."""
        if notice.id in self.journal.done:
            self._tally(notice.target, "duplicate")
            return False
        target, secrets = self.targets[notice.target], self.secrets[notice.target]
        rendered = render(target, notice, secrets)
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                said = await asyncio.to_thread(send, target, rendered, secrets)
            except DeliveryError as e:
                why = self.masker.text(str(e))
                if not e.retry or attempt == self.attempts:
                    self._tally(notice.target, "failed")
                    log.error(
                        "notify %s: gave up on %s after %d attempt(s): %s",
                        notice.target,
                        notice.id,
                        attempt,
                        why,
                    )
                    return False
                self._tally(notice.target, "retried")
                log.warning(
                    "notify %s: %s failed (%s); retrying in %gs",
                    notice.target,
                    notice.id,
                    why,
                    delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
            else:
                self._delivered(notice)
                await self.journal.save()
                self._tally(notice.target, "sent")
                log.info("notify %s: delivered %s (%s)", notice.target, notice.id, said)
                return True
        return False

    def _delivered(self, notice: Notice) -> None:
        now = time.time()
        self.journal.mark_done(notice.id, now)
        if isinstance(self.targets[notice.target], PagerDutyTarget):
            incident = f"{notice.target}|{dedup_key(notice.rule, notice.key)}"
            if notice.kind == "resolve":
                self.journal.open.pop(incident, None)
            else:
                self.journal.open[incident] = now
