"""The ``notify`` setting: where the master tells people that a fix failed.

Each target is ``{name, kind, ...}`` with kind-specific fields. A secret field (a webhook's
HMAC ``secret``, PagerDuty's ``routing_key``, a Slack webhook ``url``, an SMTP ``password``)
is given inline or as the absolute path of a file holding it, which must not be readable by
group or others (as the ``store`` setting's DSN file). Files are read when the master starts
(:func:`resolve_secret`), never at validation.
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from saline.private_file import read_private_file

__all__ = [
    "NOTIFY_ON",
    "EmailTarget",
    "NotifyOn",
    "NotifyTarget",
    "NotifyTargets",
    "PagerDutyTarget",
    "SlackTarget",
    "WebhookTarget",
    "resolve_secret",
]

#: the reactor's audit events a notification can follow (``saline/reactor/RULE/<name>``)
AuditName = Literal["escalated", "failed"]
NOTIFY_ON: tuple[AuditName, ...] = ("escalated", "failed")
#: the ``notify_on`` setting
NotifyOn = list[AuditName]

_URL = r"^https?://\S+$"
#: a URL, or the absolute path of a file holding one (a Slack URL carries its token)
_URL_OR_FILE = r"^(https?://\S+|/.+)$"


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: what rules call it (``notify: {target: NAME}``) and logs name it
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    #: seconds one delivery attempt may take (connect, send, answer)
    timeout: float = Field(default=10.0, gt=0, le=300)


class WebhookTarget(_Target):
    """A JSON POST of the whole chain, signed ``X-Saline-Signature: sha256=<hex>``."""

    kind: Literal["webhook"]
    url: str = Field(pattern=_URL)
    #: the HMAC-SHA256 key, inline or a file path (0600); none: unsigned
    secret: str | None = None


class SlackTarget(_Target):
    """A Slack-compatible incoming webhook (text + blocks)."""

    kind: Literal["slack"]
    #: the incoming-webhook URL (it holds a token: masked in logs), or a file holding it
    url: str = Field(pattern=_URL_OR_FILE)


class PagerDutyTarget(_Target):
    """PagerDuty Events API v2: trigger on failure, resolve when the same rule/key heals."""

    kind: Literal["pagerduty"]
    url: str = Field(default="https://events.pagerduty.com/v2/enqueue", pattern=_URL)
    #: the integration's routing key, inline or a file path (0600)
    routing_key: str = Field(min_length=1)
    severity: Literal["critical", "error", "warning", "info"] = "error"


class EmailTarget(_Target):
    """A plain-text mail through an SMTP relay."""

    kind: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    from_: str = Field(alias="from", pattern=r"^\S+@\S+$")
    to: list[Annotated[str, Field(pattern=r"^\S+@\S+$")]] = Field(min_length=1)
    starttls: bool = False
    user: str | None = None
    #: inline or a file path (0600)
    password: str | None = None


NotifyTarget = Annotated[
    WebhookTarget | SlackTarget | PagerDutyTarget | EmailTarget, Field(discriminator="kind")
]


def _unique(targets: list[NotifyTarget]) -> list[NotifyTarget]:
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ValueError(f"notify target name {target.name!r} is used twice")
        seen.add(target.name)
    return targets


#: the ``notify`` setting: targets with distinct names
NotifyTargets = Annotated[list[NotifyTarget], AfterValidator(_unique)]


def resolve_secret(value: str, what: str) -> str:
    """``value`` itself, or — an absolute path — the content of that file, which must not be
    open to group or others.

    :raises ConfigError: the file is missing, unreadable, too open, or empty.
    """
    if not value.startswith("/"):
        return value
    return read_private_file(Path(value), what)
