"""file.*: read, write (atomically), stat and hash files on the minion."""

import contextlib
import grp
import hashlib
import os
import pwd
import stat as statmod
import tempfile
from collections.abc import Callable
from typing import Any

from minion.modules.base import Context
from minion.modules.cmd import parse_bool
from saline.errors import ExecutionError

HASH_ALGORITHMS = ("sha256", "sha512", "sha1", "md5")
_CHUNK = 1 << 20


def _os_error(exc: OSError, path: str) -> ExecutionError:
    """Translate an OSError into a message an operator can act on."""
    if isinstance(exc, FileNotFoundError):
        return ExecutionError(f"no such file: {path}")
    if isinstance(exc, IsADirectoryError):
        return ExecutionError(f"is a directory: {path}")
    if isinstance(exc, PermissionError):
        return ExecutionError(f"permission denied: {path}")
    return ExecutionError(f"{path}: {exc.strerror or exc}")


def _parse_mode(mode: Any) -> int:
    """Strings are octal ("0644", "644", "0o644"); ints are mode bits (0o644)."""
    if isinstance(mode, bool):
        raise ExecutionError(f"invalid mode {mode!r}")
    if isinstance(mode, int):
        bits = mode
    elif isinstance(mode, str):
        text = mode.strip().lower().removeprefix("0o")
        try:
            bits = int(text, 8)
        except ValueError as exc:
            raise ExecutionError(f"invalid mode {mode!r}: expected octal like '0644'") from exc
    else:
        raise ExecutionError(f"invalid mode {mode!r}: expected octal like '0644'")
    if not 0 <= bits <= 0o7777:
        raise ExecutionError(f"invalid mode {mode!r}: out of range")
    return bits


def _umask() -> int:
    # /proc avoids os.umask()'s set-and-restore, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def read(ctx: Context, path: str, binary: bool | str = False) -> str | bytes:
    """Return the contents of a file.

    Args:
        path: file to read.
        binary: true to return raw bytes; otherwise text decoded as UTF-8 (bad bytes replaced).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _os_error(exc, path) from exc
    if parse_bool(binary, "binary"):
        return data
    return data.decode("utf-8", errors="replace")


def write(
    ctx: Context,
    path: str,
    contents: str | bytes,
    mode: str | int | None = None,
    makedirs: bool | str = False,
) -> dict[str, Any]:
    """Write a file atomically: readers see the old or the new contents, never a mix.

    A symlink is followed and its target replaced. Without ``mode`` an existing file keeps
    its mode (and owner, when running as root); a new one gets 0666 minus the umask.
    Returns the path written (symlinks resolved) and the number of bytes.

    Args:
        path: file to write.
        contents: text (written as UTF-8) or bytes.
        mode: octal permission string such as "0644".
        makedirs: true to create missing parent directories.
    """
    if isinstance(contents, str):
        data = contents.encode()
    elif isinstance(contents, bytes | bytearray):
        data = bytes(contents)
    else:
        raise ExecutionError(f"contents must be text or bytes, got {type(contents).__name__}")
    bits = _parse_mode(mode) if mode is not None else None
    target = os.path.realpath(path)
    parent = os.path.dirname(target)
    if parse_bool(makedirs, "makedirs"):
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, parent) from exc
    elif not os.path.isdir(parent):
        raise ExecutionError(f"no such directory: {parent} (pass makedirs=true to create it)")
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _os_error(exc, path) from exc
    if existing is not None and statmod.S_ISDIR(existing.st_mode):
        raise ExecutionError(f"is a directory: {path}")
    if bits is None:
        bits = statmod.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask()
    # The temporary file lives in the target's directory so os.replace is a same-filesystem
    # rename, which is atomic.
    try:
        prefix = f".{os.path.basename(target)}."
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=".tmp")
    except OSError as exc:
        raise _os_error(exc, parent) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), bits)
            if existing is not None and os.geteuid() == 0:
                os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _os_error(exc, path) from exc
    return {"path": target, "bytes": len(data)}


def _file_type(mode: int) -> str:
    if statmod.S_ISLNK(mode):
        return "symlink"
    if statmod.S_ISREG(mode):
        return "file"
    if statmod.S_ISDIR(mode):
        return "directory"
    return "other"


def stat(ctx: Context, path: str) -> dict[str, Any]:
    """Return size, mode ("0644"), uid, gid, user, group, mtime and type of a path.

    A symlink is described itself (type "symlink"), not its target. user and group are
    None when the id has no name.

    Args:
        path: file, directory or link to describe.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise _os_error(exc, path) from exc
    try:
        user: str | None = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = None
    try:
        group: str | None = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = None
    return {
        "size": st.st_size,
        "mode": format(statmod.S_IMODE(st.st_mode), "04o"),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": user,
        "group": group,
        "mtime": st.st_mtime,
        "type": _file_type(st.st_mode),
    }


def hash_(ctx: Context, path: str, algo: str = "sha256") -> str:
    """Return the hex digest of a file's contents.

    Args:
        path: file to hash.
        algo: one of sha256 (default), sha512, sha1, md5.
    """
    if algo not in HASH_ALGORITHMS:
        raise ExecutionError(f"unsupported algo {algo!r}; use one of {', '.join(HASH_ALGORITHMS)}")
    # usedforsecurity=False keeps md5/sha1 available on FIPS hosts: this is a checksum.
    digest = hashlib.new(algo, usedforsecurity=False)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise _os_error(exc, path) from exc
    return digest.hexdigest()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "read": read,
    "write": write,
    "stat": stat,
    "hash": hash_,
}
