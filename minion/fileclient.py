"""``saline://`` files for a job, through its channel, cached on the minion by content hash.

The minion sends the hash of its cached copy; the master sends the bytes only when they
changed, so a highstate of unchanged files moves almost nothing.
"""

import contextlib
import hashlib
import os
from pathlib import Path, PurePosixPath

from minion.channel import ChannelError, MasterChannel
from saline.errors import StateError

SCHEME = "saline://"


def relative_path(url: str) -> PurePosixPath:
    """``saline://a/b`` or ``a/b`` -> ``a/b``.

    :raises StateError: a path that could leave the roots (``..``, absolute, NUL, ``\\``).
    """
    path = url[len(SCHEME) :] if url.startswith(SCHEME) else url
    pure = PurePosixPath(path)
    if (
        not path
        or "\0" in path
        or "\\" in path
        or pure.is_absolute()
        or any(p in ("..", "") for p in pure.parts)
    ):
        raise StateError(f"refused file path {url!r}")
    return pure


class CachedFileClient:
    """A ``states.modules.base.FileSource`` for a job running on this minion, over its
    channel (to the master's file server, or to this node's own roots for
    ``saline call --local``: see ``minion.local``)."""

    def __init__(self, channel: MasterChannel, cache_dir: Path) -> None:
        self.channel = channel
        self.cache_dir = cache_dir
        #: files already fetched in this job: fifty states sharing a template ask once
        self._fetched: dict[PurePosixPath, bytes] = {}

    def get(self, url: str) -> bytes:
        relative = relative_path(url)
        if relative not in self._fetched:
            self._fetched[relative] = self._fetch(relative)
        return self._fetched[relative]

    def _fetch(self, relative: PurePosixPath) -> bytes:
        cached = self.cache_dir / relative
        have = None
        with contextlib.suppress(OSError):
            have = hashlib.sha256(cached.read_bytes()).hexdigest()
        try:
            reply = self.channel.request("file", path=str(relative), have=have)
        except ChannelError as e:
            raise StateError(f"saline://{relative}: {e}") from e
        data = reply.get("data")
        if data is None:
            return cached.read_bytes()
        if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != reply.get("sha256"):
            raise StateError(f"saline://{relative}: corrupt transfer")
        cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cached.with_name(f".{cached.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        return data
