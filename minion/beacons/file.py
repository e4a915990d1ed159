"""The ``file`` beacon: whether files exist, and when their content or mode changes.

Params:
  ``paths``: absolute paths of the files to watch.

States (one observation per path, keyed by the path):
  ``present`` (ok), ``absent`` (bad), ``changed`` (bad, one-off: the content hash or the
  permission bits differ from the previous check; the new content becomes the baseline and
  the next check says ``present`` again), ``error`` (bad: the file cannot be read).

The first check records the baseline, so a change made while the minion was down is not
reported. A directory or other non-regular file is watched by its mode only.

Data: ``path``, ``sha256``, ``mode`` (octal string such as ``"0644"``); for ``changed`` also
``previous_sha256`` and ``previous_mode``; for ``error``, ``error``.

Example::

    beacons:
      file: {paths: [/etc/opscode/chef-server.rb], interval: 30}
"""

import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from minion.beacons.base import Beacon, BeaconConfig, BeaconContext, Observation

_CHUNK = 1 << 20
#: a hash is reused only for files last modified this long before it was computed: a write
#: within the same timestamp tick as the hashing could otherwise go unnoticed ("racy git")
_RACY_NS = 2_000_000_000


class FileBeaconConfig(BeaconConfig):
    #: absolute paths to watch
    paths: list[str] = Field(min_length=1)

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not os.path.isabs(path):
                raise ValueError(f"{path!r} is not an absolute path")
        return paths


@dataclass(frozen=True)
class _Seen:
    sha256: str | None
    mode: str
    #: (inode, size, mtime, ctime): when unchanged, the previous hash may be reused
    signature: tuple[int, int, int, int]
    #: wall clock (ns) when sha256 was computed
    hashed_at: int = 0


class FileBeacon(Beacon):
    """Watch files for existence, content (sha256) and permission bits."""

    name = "file"
    bad_states = ("absent", "changed", "error")
    Config = FileBeaconConfig
    config: FileBeaconConfig

    def __init__(self, config: BeaconConfig, ctx: BeaconContext) -> None:
        super().__init__(config, ctx)
        #: path -> last seen file, or None when it was absent; missing before the first check
        self._baseline: dict[str, _Seen | None] = {}

    def check(self) -> list[Observation]:
        return [self._observe(path) for path in self.config.paths]

    def _observe(self, path: str) -> Observation:
        before = self._baseline.get(path)
        try:
            seen = self._look(path, before)
        except OSError as exc:
            error = {"path": path, "error": exc.strerror or str(exc)}
            return Observation(path, "error", bad=True, data=error)
        self._baseline[path] = seen
        if seen is None:
            return Observation(path, "absent", bad=True, data={"path": path})
        data: dict[str, Any] = {"path": path, "sha256": seen.sha256, "mode": seen.mode}
        # First check, or the file (re)appeared: a new baseline, not a change.
        if before is None or (before.sha256, before.mode) == (seen.sha256, seen.mode):
            return Observation(path, "present", bad=False, data=data)
        data["previous_sha256"] = before.sha256
        data["previous_mode"] = before.mode
        return Observation(path, "changed", bad=True, data=data, transient=True)

    @staticmethod
    def _look(path: str, before: _Seen | None) -> _Seen | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if not stat.S_ISREG(st.st_mode):
            return _Seen(None, mode, signature)
        if (
            before is not None
            and before.signature == signature
            and max(st.st_mtime_ns, st.st_ctime_ns) < before.hashed_at - _RACY_NS
        ):
            return _Seen(before.sha256, mode, signature, before.hashed_at)
        hashed_at = time.time_ns()
        digest = hashlib.sha256()
        with Path(path).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return _Seen(digest.hexdigest(), mode, signature, hashed_at)
