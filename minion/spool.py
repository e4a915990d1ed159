"""Messages waiting for the master's acknowledgement, one file each, kept across restarts.

A return (or an event) is written here before it is first sent and removed only when the
master says it stored it, so neither a master crash nor a minion restart loses it.
"""

import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from saline.codec import encode
from saline.keys import ensure_dir
from saline.protocol import Event, Return
from saline.wire import unpack

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
M = TypeVar("M", bound=BaseModel)


class Spool(Generic[M]):
    """Messages of one type keyed by a name (jid, event id); oldest first by file name."""

    def __init__(
        self,
        directory: Path,
        model: type[M],
        key: Callable[[M], str],
        suffix: str,
        max_frame: int,
        limit: int | None = None,
    ) -> None:
        self.directory = ensure_dir(directory)
        self.model = model
        self.key = key
        self.suffix = suffix
        self.max_frame = max_frame
        #: most messages kept; beyond it the oldest are dropped (and logged)
        self.limit = limit

    def _path(self, key: str) -> Path:
        # keys come from the network (jids): never let one name a path outside the spool
        if not _KEY_RE.match(key):
            raise ValueError(f"unsafe spool key {key!r}")
        return self.directory / f"{key}{self.suffix}"

    def put(self, message: M) -> None:
        path = self._path(self.key(message))
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(encode(message))
        os.replace(tmp, path)
        if self.limit is not None:
            self._trim(self.limit)

    def _trim(self, limit: int) -> None:
        files = sorted(self.directory.glob(f"*{self.suffix}"))
        for old in files[: max(len(files) - limit, 0)]:
            log.error("spool full (%d): dropped %s", limit, old.name)
            with contextlib.suppress(OSError):
                old.unlink()

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._path(key).unlink()

    def pending(self) -> list[M]:
        """Every spooled message, oldest first; unreadable files are set aside, not lost."""
        messages = []
        for path in sorted(self.directory.glob(f"*{self.suffix}")):
            try:
                raw = unpack(path.read_bytes(), self.max_frame * 2)
                messages.append(self.model.model_validate(raw))
            except Exception as e:  # a torn or foreign file must not stop the minion
                log.error("spooled %s unreadable (%s); moved aside", path.name, e)
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_suffix(".bad"))
        return messages


def return_spool(directory: Path, max_frame: int) -> Spool[Return]:
    return Spool(directory, Return, lambda r: r.jid, ".ret", max_frame)


def event_spool(directory: Path, max_frame: int) -> Spool[Event]:
    """Events keep their order (ids sort by time); at most 10,000 wait for a master."""
    return Spool(directory, Event, lambda e: e.eid, ".evt", max_frame, limit=10_000)
