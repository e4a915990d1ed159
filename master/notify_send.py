"""What a notification says, per kind of target, and the blocking calls that send it.

:func:`render` turns one :class:`Notice` (the event → rule → verdict → jobs → outcome chain)
into what a target takes: a signed JSON webhook, a Slack incoming-webhook body, a PagerDuty
Events API v2 event, or a mail. :func:`send` delivers it with the standard library's
``urllib.request`` and ``smtplib`` — blocking, with the target's timeout: the notifier calls
it in a worker thread. A failure raises :class:`DeliveryError`, saying whether trying again
can help (HTTP 5xx and 429, SMTP 4xx, connection errors) or not (other HTTP 4xx, SMTP 5xx).
"""

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal

import saline
from master.notify_config import (
    EmailTarget,
    NotifyTarget,
    PagerDutyTarget,
    SlackTarget,
    WebhookTarget,
)
from saline.errors import SalineError

__all__ = ["DeliveryError", "Notice", "Rendered", "dedup_key", "render", "send", "signature"]

#: what a notice is about: an audit event it follows, a rule's notify action, or a heal
NoticeKind = Literal["escalated", "failed", "notify", "resolve"]


class DeliveryError(SalineError):
    """One delivery attempt failed; ``retry`` says whether another attempt can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Notice:
    """One notification to one target, built on the master's loop from the store."""

    #: the dedup id: a delivery recorded as done under it is never sent again
    id: str
    target: str
    kind: NoticeKind
    rule: str
    #: the reaction's throttle key ("" when it has none)
    key: str
    #: the chain, masked: event, rule, verdict, reason, jobs, outcome, link (JSON values)
    body: dict[str, Any] = field(default_factory=dict)
    #: seq of the audit event it follows (None for actions): the target's replay cursor
    seq: int | None = None


def dedup_key(rule: str, key: str) -> str:
    """PagerDuty's ``dedup_key`` for a rule and key: a later heal resolves the same one."""
    return f"saline/{rule}/{key}" if key else f"saline/{rule}"


def signature(secret: str, body: bytes) -> str:
    """The ``X-Saline-Signature`` header value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Rendered:
    """What goes on the wire: an HTTP POST (url, body, headers) or a mail."""

    url: str | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mail: EmailMessage | None = None


def _lines(body: dict[str, Any]) -> list[str]:
    """The chain as short lines of text (Slack and mail)."""
    event = body.get("event") or {}
    lines = []
    if event:
        who = f" from {event['minion']}" if event.get("minion") else ""
        lines.append(f"event: {event.get('tag')}{who} (seq {event.get('seq')})")
    lines.append(f"rule: {body['rule']}" + (f" (key {body['key']})" if body.get("key") else ""))
    lines.append(f"verdict: {body.get('verdict')}: {body.get('reason')}")
    for job in body.get("jobs", []):
        jid = f" {job['jid']}" if job.get("jid") else ""
        lines.append(
            f"action {job['action']} ({job['kind']}){jid}: {job['state']}"
            + (f": {job['detail']}" if job.get("detail") else "")
        )
    runbook = body.get("runbook") or {}
    if runbook:
        lines.append(f"runbook {runbook.get('name')}, step {runbook.get('step')!r}; before it:")
        for step in runbook.get("steps", []):
            word = {True: "ok", False: "FAILED", None: "test"}.get(step.get("result"), "?")
            lines.append(f"  {step.get('name')}: {word}: {step.get('comment')}")
    lines.append(f"outcome: {body.get('outcome') or 'open'}")
    if body.get("message"):
        lines.insert(0, str(body["message"]))
    return lines


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def render(target: NotifyTarget, notice: Notice, secrets: dict[str, str]) -> Rendered:
    """``notice`` as ``target`` takes it; ``secrets`` are the target's resolved secret fields
    (``secret``, ``routing_key``, ``url``, ``password``)."""
    body = notice.body
    summary = str(body.get("summary", ""))
    if isinstance(target, WebhookTarget):
        data = _json(body)
        headers = {"X-Saline-Delivery": notice.id, "X-Saline-Event": notice.kind}
        if "secret" in secrets:
            headers["X-Saline-Signature"] = signature(secrets["secret"], data)
        return Rendered(target.url, data, headers)
    if isinstance(target, SlackTarget):
        text = "\n".join(_lines(body))
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": summary[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"`{body.get('link', '')}`"}],
            },
        ]
        return Rendered(secrets.get("url", target.url), _json({"text": summary, "blocks": blocks}))
    if isinstance(target, PagerDutyTarget):
        event: dict[str, Any] = {
            "routing_key": secrets["routing_key"],
            "dedup_key": dedup_key(notice.rule, notice.key),
        }
        if notice.kind == "resolve":
            event["event_action"] = "resolve"
        else:
            source = (body.get("event") or {}).get("minion") or body.get("master") or "saline"
            event["event_action"] = "trigger"
            event["client"] = "saline"
            event["payload"] = {
                "summary": summary[:1024],
                "source": source,
                "severity": target.severity,
                "component": "saline-reactor",
                "group": notice.rule,
                "class": notice.kind,
                "custom_details": body,
            }
        return Rendered(target.url, _json(event))
    mail = EmailMessage()
    mail["Subject"] = f"[saline] {summary}"[:250]
    mail["From"] = target.from_
    mail["To"] = ", ".join(target.to)
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = make_msgid(domain="saline")
    mail["X-Saline-Delivery"] = notice.id
    mail.set_content("\n".join([*_lines(body), "", f"see: {body.get('link', '')}", ""]))
    return Rendered(mail=mail)


def send(target: NotifyTarget, rendered: Rendered, secrets: dict[str, str]) -> str:
    """Deliver once (blocking, within the target's timeout); answers what the far end said.

    :raises DeliveryError: it did not arrive (``retry``: whether trying again can help).
    """
    if isinstance(target, EmailTarget):
        assert rendered.mail is not None
        return _mail(target, rendered.mail, secrets.get("password"))
    assert rendered.url is not None
    return _post(rendered.url, rendered.body, rendered.headers, target.timeout)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> str:
    request = urllib.request.Request(  # noqa: S310 - the config allows http(s) URLs only
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"saline/{saline.__version__}",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return f"HTTP {answer.status}"
    except urllib.error.HTTPError as e:
        raise DeliveryError(
            f"HTTP {e.code} {e.reason}", retry=e.code >= 500 or e.code == 429
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DeliveryError(f"cannot reach the endpoint: {reason}", retry=True) from None


def _mail(target: EmailTarget, mail: EmailMessage, password: str | None) -> str:
    try:
        with smtplib.SMTP(target.host, target.port, timeout=target.timeout) as smtp:
            if target.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if target.user:
                smtp.login(target.user, password or "")
            refused = smtp.send_message(mail)
    except smtplib.SMTPResponseException as e:  # SMTP: 4xx is transient, 5xx is final
        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else ""
        raise DeliveryError(f"SMTP {e.smtp_code} {text}".strip(), retry=e.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as e:
        codes = [code for code, _ in e.recipients.values()]
        raise DeliveryError(
            f"SMTP refused every recipient ({codes})", retry=max(codes) < 500
        ) from None
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"cannot reach the SMTP relay: {e}", retry=True) from None
    if refused:
        return f"SMTP: accepted, but refused {', '.join(sorted(refused))}"
    return f"SMTP: accepted for {len(target.to)} recipient(s)"
