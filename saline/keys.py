"""Curve keypairs on disk, fingerprints, and the master's key ring (accepted/pending/rejected).

Layout under a master's ``pki_dir`` (dirs 0700, secret keys 0600)::

    master.pub  master.key            the master's own Curve keypair (Z85 text)
    minions/ID                        accepted minion public keys
    minions_pre/ID                    pending: seen, not yet accepted
    minions_rejected/ID               rejected: the ZAP handler refuses these keys
    minions_grains/ID                 trusted grains the operator fixed for ID (JSON)

A minion's ``pki_dir`` holds ``minion.pub`` / ``minion.key`` and, once known, ``master.pub``.
"""

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import zmq
import zmq.utils.z85

from saline.errors import KeyRingError
from saline.wire import MINION_ID_PATTERN

_ID_RE = re.compile(MINION_ID_PATTERN)
_Z85_RE = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def check_id(minion_id: str) -> str:
    """Return ``minion_id`` if it is a safe file name and id; raise KeyRingError otherwise."""
    if not _ID_RE.match(minion_id):
        raise KeyRingError(
            f"invalid minion id {minion_id!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return minion_id


def is_public_key(text: str) -> bool:
    return bool(_Z85_RE.match(text))


def check_public_key(key: str) -> str:
    """Return ``key`` if it is a 40-character Z85 Curve public key."""
    if not _Z85_RE.match(key):
        raise KeyRingError("not a Z85 Curve public key (40 characters expected)")
    return key


def fingerprint(public_key: str) -> str:
    """SHA-256 of the raw 32-byte key, as colon-separated hex (what operators compare)."""
    raw = zmq.utils.z85.decode(public_key.encode())
    digest = hashlib.sha256(raw).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` atomically with ``mode`` from the first byte (no window of wider perms)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and tighten it if it already exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str


def generate_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode(), secret.decode())


def write_keypair(directory: Path, name: str, pair: KeyPair) -> None:
    """Store ``name.pub`` (0644) and ``name.key`` (0600) in ``directory`` (0700)."""
    ensure_dir(directory)
    _write_private(directory / f"{name}.key", pair.secret + "\n", 0o600)
    _write_private(directory / f"{name}.pub", pair.public + "\n", 0o644)


def read_keypair(directory: Path, name: str) -> KeyPair:
    try:
        public = (directory / f"{name}.pub").read_text().strip()
        secret = (directory / f"{name}.key").read_text().strip()
    except OSError as e:
        raise KeyRingError(f"cannot read keypair {name} in {directory}: {e.strerror}") from e
    return KeyPair(check_public_key(public), secret)


def load_or_create_keypair(directory: Path, name: str) -> KeyPair:
    """Read the keypair, generating it on first start."""
    if not (directory / f"{name}.key").exists():
        write_keypair(directory, name, generate_keypair())
    key_file = directory / f"{name}.key"
    if key_file.stat().st_mode & 0o077:
        os.chmod(key_file, 0o600)
    return read_keypair(directory, name)


class KeyState(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"
    REJECTED = "rejected"


_DIRS = {
    KeyState.ACCEPTED: "minions",
    KeyState.PENDING: "minions_pre",
    KeyState.REJECTED: "minions_rejected",
}


#: where ``saline key accept ID --grain k=v`` keeps the grains the operator trusts
_GRAINS_DIR = "minions_grains"


@dataclass(frozen=True)
class KeyEntry:
    id: str
    state: KeyState
    public: str


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


class KeyRing:
    """The master's minion keys. Safe to share between threads; follows the files.

    Adding, moving or deleting a key through this object updates the in-memory index in
    place (O(1)). The CLI (``saline key ...``) edits the files from another process; this
    object notices by a cheap check, at most every 50 ms: a key directory whose mtime moved
    (or was touched close to the last scan: mtime ticks are coarse) is listed again, names
    and inodes only, and only files that are new or replaced are read. A directory
    changed only by this object is not listed again: a flood of new keys costs a file
    write each, never a read of every key file per message. Every directory is also
    listed every ``RESCAN_SECONDS`` with a stat of each file (a key deleted and written
    again may reuse its inode).
    """

    #: list every key directory at least this often, even when no mtime moved
    RESCAN_SECONDS = 2.0

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        for d in (*_DIRS.values(), _GRAINS_DIR):
            ensure_dir(pki_dir / d)
        self._lock = threading.RLock()
        self._checked = 0.0
        self._rescanned = 0.0
        #: state -> (dir mtime seen, wall clock ns of that scan)
        self._seen: dict[KeyState, tuple[int, int]] = {}
        #: (state, id) -> (entry, (inode, mtime) of its file)
        self._files: dict[tuple[KeyState, str], tuple[KeyEntry, tuple[int, int]]] = {}
        self._by_key: dict[str, KeyEntry] = {}
        #: public key -> every (state, id) holding it (stale copies included)
        self._by_public: dict[str, set[tuple[KeyState, str]]] = {}
        #: state -> ids in it (counts and listings per state without a pass over all)
        self._ids: dict[KeyState, set[str]] = {state: set() for state in KeyState}
        #: state -> the directory mtime our own last write left (not someone else's change)
        self._own_mtime: dict[KeyState, int] = {}

    def _dir(self, state: KeyState) -> Path:
        return self.pki_dir / _DIRS[state]

    # -- the index -------------------------------------------------------------------------

    def _index(self, entry: KeyEntry, identity: tuple[int, int]) -> None:
        slot = (entry.state, entry.id)
        if slot in self._files:
            self._unindex(entry.state, entry.id)
        self._files[slot] = (entry, identity)
        self._ids[entry.state].add(entry.id)
        self._by_public.setdefault(entry.public, set()).add(slot)
        # an accepted binding wins over stale pending/rejected copies of the same key
        known = self._by_key.get(entry.public)
        if known is None or entry.state is KeyState.ACCEPTED:
            self._by_key[entry.public] = entry

    def _unindex(self, state: KeyState, minion_id: str) -> None:
        gone = self._files.pop((state, minion_id), None)
        if gone is None:
            return
        entry = gone[0]
        self._ids[state].discard(minion_id)
        slots = self._by_public[entry.public]
        slots.discard((state, minion_id))
        if self._by_key.get(entry.public) != entry:
            return
        if not slots:
            del self._by_public[entry.public], self._by_key[entry.public]
            return
        others = sorted(slots, key=lambda slot: slot[0] is not KeyState.ACCEPTED)
        self._by_key[entry.public] = self._files[others[0]][0]

    def _scan(self, state: KeyState, thorough: bool = False) -> None:
        """List one directory: drop vanished files, read new or replaced ones.

        A file is known by its inode; ``thorough`` also compares its mtime (one stat per
        file), which catches a key deleted and written again under a reused inode.
        """
        directory = self._dir(state)
        mtime = directory.stat().st_mtime_ns
        self._seen[state] = (mtime, time.time_ns())
        present: dict[str, tuple[int, int]] = {}
        with os.scandir(directory) as it:
            for item in it:
                if not item.name.startswith(".") and _ID_RE.match(item.name):
                    stamp = item.stat(follow_symlinks=False).st_mtime_ns if thorough else 0
                    present[item.name] = (item.inode(), stamp)
        for (s, minion_id), (_, known) in list(self._files.items()):
            if s is not state:
                continue
            found = present.get(minion_id)
            if found is None or found[0] != known[0] or (thorough and found[1] != known[1]):
                self._unindex(state, minion_id)
        for minion_id, (inode, stamp) in present.items():
            if (state, minion_id) in self._files:
                continue
            path = directory / minion_id
            try:
                public = check_public_key(path.read_text().strip())
                stamp = stamp or path.stat().st_mtime_ns
            except (OSError, KeyRingError):
                continue
            self._index(KeyEntry(minion_id, state, public), (inode, stamp))

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 0.05:
            return
        self._checked = now
        full = now - self._rescanned >= self.RESCAN_SECONDS
        if full:
            self._rescanned = now
        for state in KeyState:
            seen = self._seen.get(state)
            if full or seen is None:
                self._scan(state, thorough=True)
                continue
            mtime = self._dir(state).stat().st_mtime_ns
            recent = mtime >= seen[1] - 50_000_000 and mtime != self._own_mtime.get(state)
            if mtime != seen[0] or recent:
                self._scan(state)

    def _wrote(self, state: KeyState, before: int) -> None:
        """After this object changed ``state``'s directory: when nobody else had changed it
        since the last scan, the new mtime is ours and needs no listing (an outside change
        in the very same mtime tick waits for the next full listing, at most 2 s)."""
        seen = self._seen.get(state)
        if seen is not None and seen[0] == before:
            mtime = self._dir(state).stat().st_mtime_ns
            self._seen[state] = (mtime, seen[1])
            self._own_mtime[state] = mtime

    def count(self, state: KeyState) -> int:
        """How many keys are in ``state`` (O(1))."""
        with self._lock:
            self._refresh()
            return len(self._ids[state])

    def lookup_key(self, public: str) -> KeyEntry | None:
        """Which id and state a public key is bound to, if any."""
        with self._lock:
            self._refresh()
            return self._by_key.get(public)

    def get(self, minion_id: str, state: KeyState) -> KeyEntry | None:
        with self._lock:
            self._refresh()
            found = self._files.get((state, minion_id))
            return None if found is None else found[0]

    def entries(self) -> list[KeyEntry]:
        with self._lock:
            self._refresh()
            return sorted((e for e, _ in self._files.values()), key=lambda e: (e.state, e.id))

    def ids(self, state: KeyState) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self._ids[state])

    def _find(self, minion_id: str) -> KeyEntry:
        check_id(minion_id)
        for state in KeyState:
            entry = self.get(minion_id, state)
            if entry is not None:
                return entry
        raise KeyRingError(f"no key for minion {minion_id!r}")

    def _move(self, entry: KeyEntry, to: KeyState) -> None:
        if entry.state is to:
            return
        with self._lock:
            target = self._dir(to) / entry.id
            if target.exists():
                raise KeyRingError(f"minion {entry.id!r} already has a {to} key; delete it first")
            before = {s: self._dir(s).stat().st_mtime_ns for s in (entry.state, to)}
            os.replace(self._dir(entry.state) / entry.id, target)
            self._unindex(entry.state, entry.id)
            moved = KeyEntry(entry.id, to, entry.public)
            self._index(moved, _identity(target))
            for s, mtime in before.items():
                self._wrote(s, mtime)

    def add(self, minion_id: str, public: str, state: KeyState) -> None:
        """Store a key under ``state`` (refuses to overwrite a different key for the same id)."""
        check_id(minion_id)
        check_public_key(public)
        with self._lock:
            for s in KeyState:
                existing = self.get(minion_id, s)
                if existing is not None and existing.public != public:
                    raise KeyRingError(f"minion {minion_id!r} already has a different {s} key")
                if existing is not None:
                    self._move(existing, state)
                    return
            path = self._dir(state) / minion_id
            before = self._dir(state).stat().st_mtime_ns
            _write_private(path, public + "\n", 0o644)
            self._index(KeyEntry(minion_id, state, public), _identity(path))
            self._wrote(state, before)

    def submit(self, minion_id: str, public: str) -> KeyState:
        """A minion presented ``public`` claiming ``minion_id``: record it pending if new."""
        known = self.lookup_key(public)
        if known is not None:
            return known.state
        self.add(minion_id, public, KeyState.PENDING)
        return KeyState.PENDING

    def accept(self, minion_id: str) -> None:
        entry = self._find(minion_id)
        if entry.state is KeyState.ACCEPTED:
            return
        self._move(entry, KeyState.ACCEPTED)

    def accept_all(self) -> list[str]:
        pending = self.ids(KeyState.PENDING)
        for minion_id in pending:
            self.accept(minion_id)
        return pending

    def reject(self, minion_id: str) -> None:
        self._move(self._find(minion_id), KeyState.REJECTED)

    def delete(self, minion_id: str) -> None:
        with self._lock:
            entry = self._find(minion_id)
            before = self._dir(entry.state).stat().st_mtime_ns
            (self._dir(entry.state) / entry.id).unlink()
            self._unindex(entry.state, entry.id)
            self._wrote(entry.state, before)
            (self.pki_dir / _GRAINS_DIR / entry.id).unlink(missing_ok=True)

    # -- trusted grains ----------------------------------------------------------------------

    def set_trusted_grains(self, minion_id: str, grains: dict[str, str]) -> None:
        """Fix grains for ``minion_id`` that the master trusts (merged over earlier ones)."""
        check_id(minion_id)
        merged = {**self.trusted_grains(minion_id), **grains}
        path = self.pki_dir / _GRAINS_DIR / minion_id
        _write_private(path, json.dumps(merged, sort_keys=True) + "\n", 0o644)

    def trusted_grains(self, minion_id: str) -> dict[str, Any]:
        """The grains the operator fixed for ``minion_id`` ({} when none, or unreadable)."""
        check_id(minion_id)
        try:
            loaded = json.loads((self.pki_dir / _GRAINS_DIR / minion_id).read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}
