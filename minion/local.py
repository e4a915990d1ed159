"""Masterless files and pillar: this node's own ``file_roots`` and ``pillar_roots``.

``saline call --local`` runs a function as a job would, in a forked child whose channel
(``minion.channel``) asks for files and pillar; here the answers come from this node's
disk instead of the master, in the same reply shapes (``FileReply``, ``PillarReply``
fields), so the file client and the state engine cannot tell the difference.

The rules are the master's: a path is relative to the roots, searched in order; ``..``,
absolute paths, NUL bytes and symlinks leading out of their root are refused. The pillar
is compiled by the kernel's compiler (``saline.pillar``) for this node's id and grains: on
its own node, with its own roots, the node is the one deciding what it trusts.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minion.channel import ChannelError
from minion.fileclient import relative_path
from saline.errors import SalineError
from saline.pillar import PillarCompiler

#: largest file served, as the master's file server (a state tree is small text)
MAX_FILE = 8 * 1024 * 1024


class LocalFiles:
    """``saline://path`` from local roots, traversal refused."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [r.resolve() for r in roots]

    def get(self, path: str, have: str | None) -> dict[str, Any]:
        """A file reply: ``path``, ``sha256``, ``data`` (None when ``have`` is its hash).

        :raises SalineError: refused, missing, too big or unreadable (the message says which).
        """
        relative = relative_path(path)
        for root in self.roots:
            candidate = root / relative
            try:
                if not candidate.is_file():
                    continue
                if not candidate.resolve().is_relative_to(root):
                    raise SalineError(f"refused saline://{relative}: a symlink leads out of {root}")
                size = candidate.stat().st_size
                if size > MAX_FILE:
                    raise SalineError(
                        f"saline://{relative} is {size} bytes; the limit is {MAX_FILE}"
                    )
                data = candidate.read_bytes()
            except OSError as e:
                raise SalineError(f"cannot read saline://{relative}: {e.strerror}") from e
            sha256 = hashlib.sha256(data).hexdigest()
            return {
                "path": str(relative),
                "sha256": sha256,
                "data": None if have == sha256 else data,
                "error": None,
            }
        listed = ", ".join(str(r) for r in self.roots) or "no file_roots"
        raise SalineError(f"no such file saline://{relative} (file_roots: {listed})")


class LocalRelay:
    """A :data:`minion.channel.Relay` answering a job's requests from this node's disk."""

    def __init__(
        self,
        file_roots: list[Path],
        pillar_roots: list[Path],
        minion_id: str,
        grains: Mapping[str, Any],
    ) -> None:
        self.files = LocalFiles(file_roots)
        self.pillar = PillarCompiler(pillar_roots)
        self.minion_id = minion_id
        self.grains = dict(grains)

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "file":
                have = request.get("have")
                return self.files.get(str(request.get("path")), have and str(have))
            if op == "pillar":
                pillar, secrets = self.pillar.compile(self.minion_id, self.grains)
                return {"pillar": pillar, "secrets": sorted(secrets), "error": None}
        except SalineError as e:  # StateError (a refused path) and PillarError are too
            return {"error": str(e)}
        raise ChannelError(f"unknown request {str(op)[:32]!r}")
