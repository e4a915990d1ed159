"""What a returner is: something that takes the master's documents — job returns, events,
reaction decisions — and keeps them somewhere else (Elasticsearch, an operator's database).

A returner only ships batches (:meth:`Returner.ship`, called from a worker thread); queueing
on disk, back-off and counting are the pump's (``master/returners/pump.py``), the same for
every returner. Documents carry a stable id (an event's seq, ``JID:MINION`` for a return)
so a batch shipped twice after a lost answer is stored once.

Field names follow the Elastic Common Schema where one fits (``@timestamp``, ``event.*``,
``host.name``); saline's own fields are under ``saline.*``.
"""

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from master.store.base import EventRecord, ReturnRecord

#: the three streams, each its own index or table
Kind = Literal["events", "returns", "reactions"]
KINDS: tuple[Kind, ...] = ("events", "returns", "reactions")


class Unavailable(Exception):
    """The destination cannot take documents now (down, overloaded): try again later."""


@dataclass(frozen=True)
class Doc:
    kind: Kind
    id: str
    body: dict[str, Any]


@dataclass
class Shipped:
    """What became of one batch: ids stored (or already there), and ids refused for good
    (a document the destination will never take: counted, logged, dropped)."""

    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


class Returner(Protocol):
    name: str

    def ship(self, docs: list[Doc]) -> Shipped:
        """Store ``docs`` (idempotently, by id). :raises Unavailable: nothing may be taken
        as stored; the pump keeps the batch and tries again."""
        ...

    def close(self) -> None: ...


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """JSON-shaped: bytes (a minion may return them) as base64 text."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def event_docs(record: EventRecord) -> list[Doc]:
    """The event itself, and for the reactor's audit events also a reaction document."""
    if record.seq is None:
        return []
    saline = {
        "tag": record.tag,
        "seq": record.seq,
        "data": _plain(record.data),
        "cause": record.cause,
        "depth": record.depth,
        "rule": record.rule,
    }
    body: dict[str, Any] = {
        "@timestamp": _iso(record.ts),
        "event": {"kind": "event", "dataset": "saline.events", "id": str(record.seq)},
        "saline": saline,
    }
    if record.minion is not None:
        body["host"] = {"name": record.minion}
    docs = [Doc("events", str(record.seq), body)]
    parts = record.tag.split("/")
    if len(parts) == 4 and parts[0] == "saline" and parts[1] == "reactor":
        data = record.data
        reaction = {
            "rule": parts[2],
            "what": parts[3],
            "verdict": data.get("verdict"),
            "reason": data.get("reason"),
            "outcome": data.get("outcome"),
            "reaction": data.get("reaction"),
            "event_tag": data.get("event_tag"),
            "event_seq": record.cause,
            "seq": record.seq,
        }
        outcome = {"finished": "success", "failed": "failure"}.get(parts[3], "unknown")
        docs.append(
            Doc(
                "reactions",
                str(record.seq),
                {
                    "@timestamp": _iso(record.ts),
                    "event": {"kind": "event", "dataset": "saline.reactions", "outcome": outcome},
                    "rule": {"name": parts[2]},
                    "saline": {k: v for k, v in reaction.items() if v is not None},
                },
            )
        )
    return docs


def return_doc(record: ReturnRecord) -> Doc:
    body = {
        "@timestamp": _iso(record.received),
        "event": {
            "kind": "event",
            "dataset": "saline.returns",
            "outcome": "success" if record.success else "failure",
            "duration": int(record.duration_ms * 1_000_000),  # ECS: nanoseconds
        },
        "host": {"name": record.minion},
        "saline": {
            "jid": record.jid,
            "fun": record.fun,
            "retcode": record.retcode,
            "success": record.success,
            # any shape a function returns: kept as text, not mapped field by field
            "ret": json.dumps(_plain(record.ret), sort_keys=True, default=str),
        },
    }
    return Doc("returns", f"{record.jid}:{record.minion}", body)
