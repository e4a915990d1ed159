"""Records to table rows and back, the same for every backend: structured values (args,
kwargs, returns, event data, grains, actions, progress) are msgpack blobs; tuples come back
as lists, as they do over the wire."""

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from master.store.base import (
    ActionProgress,
    Chain,
    EventRecord,
    JobRecord,
    KeyRow,
    ReactionRecord,
    ReturnRecord,
)
from reactors.model import RenderedAction


def pack_value(value: Any) -> bytes:
    """Serialise a msgpack-able value; raises TypeError for anything else."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack_value(blob: bytes) -> Any:
    # strict_map_key=False: return values may be dicts with int keys.
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def job_from_row(row: tuple[Any, ...]) -> JobRecord:
    """The job of a row in ``job_row``'s order (columns after the 15th are ignored)."""
    jid, fun, args, kwargs, target, tgt_type, minions, missing, user, created, timeout = row[:11]
    cause, depth, rule, epoch = row[11:15]
    return JobRecord(
        jid=jid,
        fun=fun,
        args=unpack_value(args),
        kwargs=unpack_value(kwargs),
        target=target,
        tgt_type=tgt_type,
        minions=unpack_value(minions),
        missing=unpack_value(missing),
        user=user,
        created=created,
        timeout=timeout,
        chain=Chain(cause, depth, rule),
        epoch=epoch,
    )


def kwargs_of(blob: bytes) -> dict[str, Any]:
    """A stored job's kwargs (a map; anything else reads as no kwargs)."""
    kwargs = unpack_value(blob)
    return kwargs if isinstance(kwargs, dict) else {}


def return_from_row(row: tuple[Any, ...]) -> ReturnRecord:
    jid, minion, fun, success, retcode, ret, duration_ms, received = row
    return ReturnRecord(
        jid=jid,
        minion=minion,
        fun=fun,
        success=bool(success),
        retcode=retcode,
        ret=unpack_value(ret),
        duration_ms=duration_ms,
        received=received,
    )


def event_from_row(row: tuple[Any, ...]) -> EventRecord:
    seq, tag, data, minion, ts, cause, depth, rule = row
    return EventRecord(
        tag=tag,
        data=unpack_value(data),
        minion=minion,
        ts=ts,
        seq=seq,
        cause=cause,
        depth=depth,
        rule=rule,
    )


def reaction_row(record: ReactionRecord) -> tuple[Any, ...]:
    progress = {str(i): dataclasses.asdict(p) for i, p in record.progress.items()}
    return (
        record.id,
        record.event_seq,
        record.event_tag,
        record.rule,
        record.verdict,
        record.reason,
        record.key,
        pack_value([a.model_dump(mode="json") for a in record.actions]),
        pack_value(progress),
        record.outcome,
        record.created or time.time(),
        record.finished,
        record.epoch,
    )


def reaction_from_row(row: tuple[Any, ...]) -> ReactionRecord:
    progress = {int(k): _progress(v) for k, v in unpack_value(row[8]).items()}
    return ReactionRecord(
        id=row[0],
        event_seq=row[1],
        event_tag=row[2],
        rule=row[3],
        verdict=row[4],
        reason=row[5],
        key=row[6],
        actions=[RenderedAction.model_validate(a) for a in unpack_value(row[7])],
        progress=progress,
        outcome=row[9],
        created=row[10],
        finished=row[11],
        epoch=row[12],
    )


def _progress(value: dict[str, Any]) -> ActionProgress:
    """An action's progress; rows written before the runbook journal have no ``jids``."""
    jids = [str(j) for j in value.get("jids") or []]
    return ActionProgress(value["state"], value.get("jid"), value.get("detail"), jids)


def job_row(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.jid,
        job.fun,
        pack_value(job.args),
        pack_value(job.kwargs),
        job.target,
        job.tgt_type,
        pack_value(job.minions),
        pack_value(job.missing),
        job.user,
        job.created,
        job.timeout,
        job.chain.cause,
        job.chain.depth,
        job.chain.rule,
        job.epoch,
    )


def return_row(r: ReturnRecord) -> tuple[Any, ...]:
    """``success`` as a bool (SQLite stores it as 0/1, PostgreSQL as a boolean)."""
    return (r.jid, r.minion, r.fun, r.success, r.retcode, pack_value(r.ret), r.duration_ms,
            r.received)  # fmt: skip


def batch_epoch(reactions: Sequence[ReactionRecord]) -> int:
    """The epoch a batch of reactions is fenced at: its largest (0: not fenced)."""
    return max((r.epoch for r in reactions), default=0)


def event_row(e: EventRecord) -> tuple[Any, ...]:
    return (e.tag, pack_value(e.data), e.minion, e.ts, e.cause, e.depth, e.rule)


def key_row(row: KeyRow) -> tuple[Any, ...]:
    """(id, state, public, grains as JSON): the columns a key write sets itself."""
    return (row.id, row.state, row.public, json.dumps(row.grains, sort_keys=True))


def key_from_row(row: tuple[Any, ...]) -> KeyRow:
    """A key of a row (id, state, public, grains, version, changed)."""
    minion_id, state, public, grains, version, changed = row
    loaded = json.loads(grains) if grains else {}
    return KeyRow(
        id=minion_id,
        state=state,
        public=public or "",
        grains=loaded if isinstance(loaded, dict) else {},
        version=int(version),
        changed=float(changed),
    )
