"""Returns waiting for the master's acknowledgement, one file per job, kept across restarts.

A return is written here before it is first sent and removed only when the master says it
stored it, so neither a master crash nor a minion restart loses it.
"""

import contextlib
import logging
import os
import re
from pathlib import Path

from saline.codec import encode
from saline.keys import ensure_dir
from saline.protocol import Return
from saline.wire import unpack

log = logging.getLogger(__name__)

_JID_RE = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")


class ReturnSpool:
    def __init__(self, directory: Path, max_frame: int) -> None:
        self.directory = ensure_dir(directory)
        self.max_frame = max_frame

    def _path(self, jid: str) -> Path:
        # jids come from the network: never let one name a path outside the spool
        if not _JID_RE.match(jid):
            raise ValueError(f"unsafe jid {jid!r}")
        return self.directory / f"{jid}.ret"

    def put(self, ret: Return) -> None:
        path = self._path(ret.jid)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(encode(ret))
        os.replace(tmp, path)

    def remove(self, jid: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._path(jid).unlink()

    def pending(self) -> list[Return]:
        """Every spooled return, oldest job first; unreadable files are set aside, not lost."""
        returns = []
        for path in sorted(self.directory.glob("*.ret")):
            try:
                returns.append(Return.model_validate(unpack(path.read_bytes(), self.max_frame * 2)))
            except Exception as e:  # a torn or foreign file must not stop the minion
                log.error("spooled return %s unreadable (%s); moved aside", path.name, e)
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_suffix(".bad"))
        return returns
