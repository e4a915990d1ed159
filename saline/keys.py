"""Curve keypairs on disk, fingerprints, and the master's key ring (accepted/pending/rejected).

Layout under a master's ``pki_dir`` (dirs 0700, secret keys 0600)::

    master.pub  master.key            the master's own Curve keypair (Z85 text)
    minions/ID                        accepted minion public keys
    minions_pre/ID                    pending: seen, not yet accepted
    minions_rejected/ID               rejected: the ZAP handler refuses these keys

A minion's ``pki_dir`` holds ``minion.pub`` / ``minion.key`` and, once known, ``master.pub``.
"""

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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


@dataclass(frozen=True)
class KeyEntry:
    id: str
    state: KeyState
    public: str


class KeyRing:
    """The master's minion keys. Safe to share between threads; reloads when files change.

    The CLI (``saline key ...``) edits the files directly; a running master sees the change
    on its next lookup because the index is rebuilt when a directory's mtime moves.
    """

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        for d in _DIRS.values():
            ensure_dir(pki_dir / d)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] = ()
        self._read_at_ns = 0
        self._checked = 0.0
        self._by_key: dict[str, KeyEntry] = {}
        self._by_id: dict[tuple[KeyState, str], KeyEntry] = {}

    def _dir(self, state: KeyState) -> Path:
        return self.pki_dir / _DIRS[state]

    def _reload_if_changed(self) -> None:
        # Checked at most every 50 ms (lookups happen per message). mtime ticks are coarse:
        # a change made in the same tick as our last read leaves the stamp unchanged, so a
        # directory touched shortly before that read is read once more.
        now = time.monotonic()
        if now - self._checked < 0.05:
            return
        self._checked = now
        stamp = tuple(self._dir(s).stat().st_mtime_ns for s in KeyState)
        if stamp == self._stamp and max(stamp) < self._read_at_ns - 50_000_000:
            return
        self._read_at_ns = time.time_ns()
        by_key: dict[str, KeyEntry] = {}
        by_id: dict[tuple[KeyState, str], KeyEntry] = {}
        for state in KeyState:
            for path in self._dir(state).iterdir():
                if path.name.startswith(".") or not _ID_RE.match(path.name):
                    continue
                try:
                    public = check_public_key(path.read_text().strip())
                except (OSError, KeyRingError):
                    continue
                entry = KeyEntry(path.name, state, public)
                by_id[(state, path.name)] = entry
                # an accepted binding wins over stale pending/rejected copies of the same key
                if public not in by_key or state is KeyState.ACCEPTED:
                    by_key[public] = entry
        self._by_key, self._by_id, self._stamp = by_key, by_id, stamp

    def lookup_key(self, public: str) -> KeyEntry | None:
        """Which id and state a public key is bound to, if any."""
        with self._lock:
            self._reload_if_changed()
            return self._by_key.get(public)

    def get(self, minion_id: str, state: KeyState) -> KeyEntry | None:
        with self._lock:
            self._reload_if_changed()
            return self._by_id.get((state, minion_id))

    def entries(self) -> list[KeyEntry]:
        with self._lock:
            self._reload_if_changed()
            return sorted(self._by_id.values(), key=lambda e: (e.state, e.id))

    def ids(self, state: KeyState) -> list[str]:
        return [e.id for e in self.entries() if e.state is state]

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
        target = self._dir(to) / entry.id
        if target.exists():
            raise KeyRingError(f"minion {entry.id!r} already has a {to} key; delete it first")
        os.replace(self._dir(entry.state) / entry.id, target)
        self._checked = 0.0

    def add(self, minion_id: str, public: str, state: KeyState) -> None:
        """Store a key under ``state`` (refuses to overwrite a different key for the same id)."""
        check_id(minion_id)
        check_public_key(public)
        for s in KeyState:
            existing = self.get(minion_id, s)
            if existing is not None and existing.public != public:
                raise KeyRingError(f"minion {minion_id!r} already has a different {s} key")
            if existing is not None:
                self._move(existing, state)
                return
        _write_private(self._dir(state) / minion_id, public + "\n", 0o644)
        self._checked = 0.0

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
        entry = self._find(minion_id)
        (self._dir(entry.state) / entry.id).unlink()
        self._checked = 0.0
