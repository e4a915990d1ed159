"""The file server: ``saline://path`` from the master's ``file_roots``, traversal refused.

A path is relative to the roots, searched in order. ``..`` segments, absolute paths, NUL
bytes, and symlinks that lead outside their root are refused: a minion can read the
state tree, never the master's filesystem.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from saline.errors import SalineError

SCHEME = "saline://"
#: largest file served (it travels in one frame)
MAX_FILE = 8 * 1024 * 1024


class FileServerError(SalineError):
    """A path was refused or not found."""


class FileMissing(FileServerError):
    """No such file under any root: a routine answer (``name.yaml`` before
    ``name/init.yaml``), not a refusal."""


def clean_path(path: str) -> PurePosixPath:
    """``saline://a/b`` or ``a/b`` -> ``a/b``; refuse anything that could leave the roots."""
    if path.startswith(SCHEME):
        path = path[len(SCHEME) :]
    if not path or "\0" in path or "\\" in path:
        raise FileServerError(f"refused path {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts):
        raise FileServerError(f"refused path {path!r}: it escapes the file roots")
    return pure


@dataclass(frozen=True)
class ServedFile:
    path: str
    sha256: str
    data: bytes


class FileServer:
    def __init__(self, roots: list[Path]) -> None:
        self.roots = [r.resolve() for r in roots]

    def find(self, path: str) -> Path:
        relative = clean_path(path)
        for root in self.roots:
            candidate = root / relative
            try:
                # judged before existence: a missing file outside the root is refused too, so
                # the answer never tells a peer what exists outside the roots
                if not candidate.resolve().is_relative_to(root):
                    raise FileServerError(f"refused path {path!r}: it leads outside its root")
                if not candidate.is_file():
                    continue
            except OSError:  # a name too long, a loop of symlinks...: nothing to serve
                continue
            return candidate
        raise FileMissing(f"no such file saline://{relative}")

    def get(self, path: str) -> ServedFile:
        """The file's bytes and sha256. :raises FileServerError: refused, missing, too big."""
        found = self.find(path)
        try:
            size = found.stat().st_size
            if size > MAX_FILE:
                raise FileServerError(f"saline://{path} is {size} bytes; the limit is {MAX_FILE}")
            data = found.read_bytes()
        except OSError as e:  # gone or unreadable since find(): an answer, not a crash
            raise FileServerError(f"cannot read saline://{path}: {e.strerror}") from e
        return ServedFile(str(clean_path(path)), hashlib.sha256(data).hexdigest(), data)
