"""The notifier against real local endpoints: an HTTP server and an SMTP sink on loopback."""

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from master.bus import EventBus
from master.config import MasterConfig
from master.notify import Notifier
from master.notify_config import NotifyTarget
from master.notify_send import Notice, render
from master.store.base import ActionProgress, EventRecord, ReactionRecord
from master.store.sqlite import SqliteStore
from reactors.model import RenderedAction
from reactors.orchestrate import StepNotice
from reactors.policy import load_policy
from reactors.rules import NotifyAction, RuleError, RunAction
from saline.errors import ConfigError
from tests.endpoints import HttpSink, SmtpSink, http_sink, smtp_sink

SECRET = "s3cr3t-hmac-key"
TARGETS: TypeAdapter[list[NotifyTarget]] = TypeAdapter(list[NotifyTarget])


@pytest.fixture
def sink() -> Any:
    with http_sink() as s:
        yield s


@pytest.fixture
def mail() -> Any:
    with smtp_sink() as s:
        yield s


class World:
    """A store and a bus, with helpers to write a reaction's trail as the reactor does."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = SqliteStore(tmp / "jobs.sqlite")
        self.bus = EventBus(self.store)

    def notifier(self, targets: list[dict[str, Any]], **kw: Any) -> Notifier:
        kw.setdefault("backoff", 0.01)
        notify_on = kw.pop("notify_on", ["escalated", "failed"])
        return Notifier(
            TARGETS.validate_python(targets), notify_on, self.store, self.bus, self.tmp, **kw
        )

    def cause(self, data: dict[str, Any] | None = None) -> EventRecord:
        [event] = self.bus.publish_records(
            [EventRecord("saline/beacon/be1/service/stopped", data or {"name": "etcd"}, "be1", 0)]
        )
        return event

    def escalate(self, rid: str, key: str = "be1:etcd", data: dict[str, Any] | None = None) -> int:
        """An escalated decision: the row, then its audit event. Answers the audit seq."""
        cause = self.cause(data)
        reason = "flapping: 4 firings within 10m"
        row = ReactionRecord(
            rid, cause.seq, cause.tag, "fix", "escalate", reason, key, [], {}, "escalate"
        )
        self.store.save_reactions([row])
        audit = {"verdict": "escalate", "reason": reason, "rule": "fix", "reaction_id": None}
        return self._audit("fix", "escalated", audit, cause.seq)

    def fired(self, rid: str, ok: bool, key: str = "be1:etcd") -> int:
        """A fired reaction that finished (ok or failed), its job recorded."""
        cause = self.cause()
        action = RenderedAction(
            action=RunAction(target="be1", function="service.start", args=["etcd"]),
            cause=str(cause.seq),
            depth=1,
            rule="fix",
        )
        detail = "job 1 (service.start): 1 succeeded" if ok else "job 1 (service.start): be1 failed"
        progress = {0: ActionProgress("done" if ok else "failed", "20260101000000000001", detail)}
        row = ReactionRecord(
            rid,
            cause.seq,
            cause.tag,
            "fix",
            "fire",
            "fired",
            key,
            [action],
            progress,
            "ok" if ok else "failed",
        )
        self.store.save_reactions([row])
        outcome = "ok" if ok else "failed"
        data = {"reaction": rid, "outcome": outcome, "reason": f"reaction {outcome}"}
        return self._audit("fix", "finished" if ok else "failed", data, cause.seq)

    def _audit(self, rule: str, what: str, data: dict[str, Any], cause: int | None) -> int:
        record = EventRecord(f"saline/reactor/{rule}/{what}", data, None, 0, cause=cause, depth=1)
        [saved] = self.bus.publish_records([record])
        assert saved.seq is not None
        return saved.seq


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[None]:
    task = asyncio.create_task(notifier.run())
    await asyncio.wait_for(notifier.ready.wait(), 10)  # subscribed, and replayed
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def secret_file(tmp: Path, name: str, value: str, mode: int = 0o600) -> str:
    path = tmp / name
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return str(path)


def hook(sink: HttpSink, **kw: Any) -> dict[str, Any]:
    return {"name": "hook", "kind": "webhook", "url": sink.url, **kw}


def test_webhook_delivered_once_signed_with_the_chain(world: World, sink: HttpSink) -> None:
    notifier = world.notifier([hook(sink, secret=secret_file(world.tmp, "hmac", SECRET))])

    async def scenario() -> None:
        async with running(notifier):
            seq = world.escalate("r1")
            await until(lambda: sink.requests)
            # the same audit event again (a replay, a resend): the journal says done
            notifier.offer(world.store.events_since(seq - 1, 1)[0])
            await until(notifier.idle)

    asyncio.run(scenario())
    assert len(sink.requests) == 1
    [request] = sink.requests
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Saline-Signature"] == f"sha256={expected}"
    assert request.headers["X-Saline-Delivery"] == "r1/escalated/hook"
    body = request.json()
    assert body["kind"] == "escalated" and body["reaction"] == "r1" and body["rule"] == "fix"
    assert body["event"]["tag"] == "saline/beacon/be1/service/stopped"
    assert body["event"]["minion"] == "be1"
    assert body["verdict"] == "escalate" and body["reason"].startswith("flapping")
    assert body["link"] == "saline reactor history --rule fix"
    assert body["summary"] == "fix escalated: flapping: 4 firings within 10m"
    assert SECRET not in request.body.decode()


def test_failed_reaction_carries_its_jobs(world: World, sink: HttpSink) -> None:
    notifier = world.notifier([hook(sink)])

    async def scenario() -> None:
        async with running(notifier):
            world.fired("r2", ok=False)
            await until(lambda: sink.requests)

    asyncio.run(scenario())
    body = sink.requests[0].json()
    assert "X-Saline-Signature" not in sink.requests[0].headers  # no secret: unsigned
    assert body["kind"] == "failed" and body["outcome"] == "failed"
    assert body["jobs"] == [
        {
            "action": 0,
            "kind": "run",
            "jid": "20260101000000000001",
            "state": "failed",
            "detail": "job 1 (service.start): be1 failed",
        }
    ]


def test_retried_on_500_then_delivered(world: World, sink: HttpSink) -> None:
    sink.answers = [500, 503]
    notifier = world.notifier([hook(sink)])

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1")
            # counted once the answer is back (the sink records the request before it)
            await until(lambda: notifier.counts["sent"])

    asyncio.run(scenario())
    assert sink.attempts == 3 and len(sink.requests) == 1
    assert notifier.counts["retried"] == 2 and notifier.counts["sent"] == 1


def test_not_retried_on_400(world: World, sink: HttpSink) -> None:
    sink.answers = [400]
    notifier = world.notifier([hook(sink)])

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1")
            await until(lambda: notifier.counts["failed"])  # final: no retry comes after it

    asyncio.run(scenario())
    assert sink.attempts == 1 and not sink.requests
    assert notifier.counts["retried"] == 0


def test_unreachable_endpoint_retries_then_gives_up(world: World) -> None:
    notifier = world.notifier(
        [{"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x", "timeout": 1}],
        attempts=3,
    )

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1")
            await until(lambda: notifier.counts["failed"])

    asyncio.run(scenario())
    assert notifier.counts["retried"] == 2


def test_a_restart_replays_what_it_missed_and_repeats_nothing(world: World, sink: HttpSink) -> None:
    first = world.notifier([hook(sink)])

    async def before() -> None:
        async with running(first):
            world.escalate("r1")
            await until(lambda: sink.requests)
            await until(first.idle)  # the journal is saved after the delivery

    asyncio.run(before())
    world.escalate("r2")  # while no master runs a notifier
    second = world.notifier([hook(sink)])
    assert "r1/escalated/hook" in second.journal.done

    async def after() -> None:
        async with running(second):
            await until(lambda: len(sink.requests) >= 2)
            # a journal cursor behind what was delivered still sends nothing twice
            second.journal.cursors["hook"] = 0
            for event in world.store.events_since(0, 100):
                second.offer(event)
            await until(second.idle)

    asyncio.run(after())
    assert [r.json()["reaction"] for r in sink.requests] == ["r1", "r2"]
    assert second.counts["duplicate"] == 2


def test_pagerduty_trigger_then_resolve_when_the_key_heals(world: World, sink: HttpSink) -> None:
    pd = {"name": "pd", "kind": "pagerduty", "url": sink.url, "routing_key": "R0UT1NGKEY"}
    notifier = world.notifier([pd])

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1", key="be1:etcd")
            await until(lambda: sink.requests)
            world.fired("r2", ok=True, key="be2:etcd")  # another key: nothing to resolve
            world.fired("r3", ok=True, key="be1:etcd")
            await until(lambda: len(sink.requests) >= 2)
            await until(notifier.idle)

    asyncio.run(scenario())
    trigger, resolve = (r.json() for r in sink.requests)
    assert len(sink.requests) == 2
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "R0UT1NGKEY"
    assert trigger["dedup_key"] == "saline/fix/be1:etcd"
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["source"] == "be1"
    assert trigger["payload"]["summary"].startswith("fix escalated")
    assert trigger["payload"]["custom_details"]["reaction"] == "r1"
    assert resolve == {
        "routing_key": "R0UT1NGKEY",
        "event_action": "resolve",
        "dedup_key": "saline/fix/be1:etcd",
    }
    assert notifier.journal.open == {}


def test_slack_body_shape(world: World, sink: HttpSink) -> None:
    url = secret_file(world.tmp, "slack-url", sink.url)
    notifier = world.notifier([{"name": "chat", "kind": "slack", "url": url}])

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1")
            await until(lambda: sink.requests)

    asyncio.run(scenario())
    body = sink.requests[0].json()
    assert body["text"] == "fix escalated: flapping: 4 firings within 10m"
    header, section, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": body["text"]}}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "rule: fix (key be1:etcd)" in section["text"]["text"]
    assert "event: saline/beacon/be1/service/stopped from be1" in section["text"]["text"]
    assert context["elements"][0]["text"] == "`saline reactor history --rule fix`"


def test_email_through_an_smtp_relay(world: World, mail: SmtpSink) -> None:
    target = {
        "name": "ops-mail",
        "kind": "email",
        "host": "127.0.0.1",
        "port": mail.port,
        "from": "saline@example.org",
        "to": ["ops@example.org", "oncall@example.org"],
    }
    notifier = world.notifier([target])

    async def scenario() -> None:
        async with running(notifier):
            world.fired("r2", ok=False)
            await until(lambda: mail.mails)

    asyncio.run(scenario())
    [message] = mail.mails
    assert message["Subject"] == "[saline] fix failed: reaction failed"
    assert message["From"] == "saline@example.org"
    assert mail.envelopes == [("saline@example.org", ["ops@example.org", "oncall@example.org"])]
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "action 0 (run) 20260101000000000001: failed" in text
    assert "see: saline reactor history --rule fix" in text


def test_notify_on_limits_what_notifies(world: World, sink: HttpSink) -> None:
    notifier = world.notifier([hook(sink)], notify_on=["failed"])

    async def scenario() -> None:
        async with running(notifier):
            world.escalate("r1")
            world.fired("r2", ok=False)
            await until(lambda: sink.requests)
            await until(notifier.idle)

    asyncio.run(scenario())
    assert [r.json()["reaction"] for r in sink.requests] == ["r2"]


def test_the_notify_action_and_masking(world: World, sink: HttpSink) -> None:
    notifier = world.notifier([hook(sink, secret=SECRET)])
    cause = world.cause({"name": "etcd", "password": "hunter2", "note": f"key {SECRET}"})
    row = ReactionRecord("r9", cause.seq, cause.tag, "fix", "fire", "fired", "k")
    action = NotifyAction(target="hook", message="etcd is down on be1")

    async def scenario() -> tuple[tuple[bool, str], tuple[bool, str]]:
        async with running(notifier):
            said = await notifier.action(row, 0, action)
            await until(lambda: sink.requests)
            await until(notifier.idle)
            return said, await notifier.action(row, 0, action)

    first, again = asyncio.run(scenario())
    assert first == (True, "notify hook: queued")
    assert again == (True, "notify hook: already delivered")
    body = sink.requests[0].json()
    assert body["kind"] == "notify" and body["message"] == "etcd is down on be1"
    assert body["event"]["data"] == {"name": "etcd", "password": "***", "note": "key ***"}


def test_a_runbook_step_notice_carries_the_steps_so_far(world: World, sink: HttpSink) -> None:
    notifier = world.notifier([hook(sink, secret=SECRET)])
    cause = world.cause()
    row = ReactionRecord("r7", cause.seq, cause.tag, "heal", "fire", "fired", "be2")
    steps = [{"name": "probe", "result": False, "comment": f"failed: token {SECRET}"}]
    notice = StepNotice("chef/ladder", 2, "tell", "hook", "rung 1 failed on be2", steps)

    async def scenario() -> list[tuple[bool, str]]:
        async with running(notifier):
            said = [await notifier.step("r7/0/step2/notify/hook", notice, row)]
            said.append(await notifier.step("r7/0/step2/notify/hook", notice, row))
            await until(lambda: sink.requests)
            await until(notifier.idle)
            said.append(await notifier.step("r7/0/step2/notify/hook", notice, row))
            by_hand = StepNotice("chef/ladder", 1, "t", "hook", "by hand", [])
            said.append(await notifier.step("orchestrate/1/step1/notify/hook", by_hand))
            said.append(await notifier.step("x", StepNotice("r", 1, "t", "pager", "m", [])))
            await until(lambda: len(sink.requests) == 2)
            await until(notifier.idle)
            return said

    said = asyncio.run(scenario())
    assert said == [
        (True, "notify hook: queued"),
        (True, "notify hook: already queued"),
        (True, "notify hook: already delivered"),
        (True, "notify hook: queued"),
        (False, "no notify target 'pager'"),
    ]
    first, by_hand = (r.json() for r in sink.requests)
    assert sink.requests[0].headers["X-Saline-Delivery"] == "r7/0/step2/notify/hook"
    assert first["kind"] == "notify" and first["message"] == "rung 1 failed on be2"
    assert first["rule"] == "heal" and first["reaction"] == "r7"
    assert first["runbook"] == {
        "name": "chef/ladder",
        "step": "tell",
        "number": 2,
        "steps": [{"name": "probe", "result": False, "comment": "failed: token ***"}],
    }
    assert by_hand["rule"] == "runbook/chef/ladder" and by_hand["reaction"] is None
    assert by_hand["link"] == "saline jobs list"


def test_slack_and_mail_text_list_the_runbook_steps() -> None:
    body = {
        "rule": "heal",
        "runbook": {
            "name": "chef/ladder",
            "step": "tell",
            "steps": [{"name": "probe", "result": False, "comment": "be2 out_of_sync"}],
        },
    }
    target = TARGETS.validate_python([{"name": "c", "kind": "slack", "url": "http://x/y"}])[0]
    rendered = render(target, Notice("id", "c", "notify", "heal", "", body), {})
    text = json.loads(rendered.body)["blocks"][1]["text"]["text"]
    assert "runbook chef/ladder, step 'tell'; before it:\n  probe: FAILED: be2 out_of_sync" in text


def test_a_runbook_naming_an_unknown_target_fails_the_rules_load(tmp_path: Path) -> None:
    rules, books = tmp_path / "rules", tmp_path / "runbooks"
    rules.mkdir()
    books.mkdir()
    (rules / "r.yaml").write_text(
        "- name: heal\n  on: x/y\n  do:\n    - orchestrate: {runbook: tell}\n"
    )
    (books / "tell.yaml").write_text("steps:\n  - notify: {target: pager, message: hi}\n")
    with pytest.raises(
        RuleError,
        match=r"r\.yaml:1: rule 'heal': do\.0\.orchestrate\.runbook: .*tell\.yaml:2: step "
        r"'step 1': notify\.target: no notify target 'pager' \(known: hook\)",
    ):
        load_policy([rules], [books], notify_targets={"hook"})
    assert load_policy([rules], [books], notify_targets={"pager"}).runbooks["tell"]


def test_a_full_queue_drops_and_counts(world: World, sink: HttpSink) -> None:
    async def scenario() -> Notifier:
        notifier = world.notifier([hook(sink)], queue_size=1)  # no worker runs: nothing drains
        world.escalate("r1")
        world.escalate("r2")
        for event in world.store.events_since(0, 100):
            notifier.offer(event)
        return notifier

    notifier = asyncio.run(scenario())
    assert notifier.counts["dropped"] == 1


def test_secret_files_must_be_private(world: World, sink: HttpSink) -> None:
    path = secret_file(world.tmp, "hmac", SECRET, mode=0o644)
    with pytest.raises(ConfigError, match=r"open to others .*chmod 600"):
        world.notifier([hook(sink, secret=path)])
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        world.notifier([hook(sink, secret=str(world.tmp / "nope"))])


def test_config_validates_targets() -> None:
    config = MasterConfig.model_validate(
        {"notify": [{"name": "m", "kind": "email", "host": "h", "from": "a@b", "to": ["c@d"]}]}
    )
    assert config.notify_on == ["escalated", "failed"]
    with pytest.raises(ValidationError, match="used twice"):
        MasterConfig.model_validate(
            {"notify": [{"name": "a", "kind": "slack", "url": "https://x"}] * 2}
        )
    with pytest.raises(ValidationError):
        MasterConfig.model_validate({"notify": [{"name": "a", "kind": "sms"}]})
    with pytest.raises(ValidationError):
        MasterConfig.model_validate({"notify_on": ["fired"]})


def test_a_rule_naming_an_unknown_target_fails_the_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "n.yaml").write_text(
        "- name: tell\n  on: x/y\n  do:\n"
        "    - notify: {target: pager, message: '{{ event.tag }}'}\n"
    )
    with pytest.raises(
        RuleError,
        match=r"n\.yaml:1: rule 'tell': do\.0\.notify\.target: no "
        r"notify target 'pager' \(known: hook\)",
    ):
        load_policy([rules], [], notify_targets={"hook"})
    with pytest.raises(RuleError, match="none configured"):
        load_policy([rules], [], notify_targets=set())
    [rule] = load_policy([rules], [], notify_targets={"pager"}).rules
    assert isinstance(rule.do[0], NotifyAction) and rule.do[0].target == "pager"


def test_an_unreadable_journal_is_set_aside(world: World, sink: HttpSink) -> None:
    (world.tmp / "notify.json").write_text("{not json")
    notifier = world.notifier([hook(sink)])
    assert notifier.journal.done == {} and notifier.journal.cursors == {}
    assert (world.tmp / "notify.corrupt").read_text() == "{not json"
