"""The key ring on disk: states, moves, conflicts, modes, and a master seeing CLI edits."""

import stat
from pathlib import Path

import pytest

from saline.errors import KeyRingError
from saline.keys import (
    KeyRing,
    KeyState,
    check_id,
    fingerprint,
    generate_keypair,
    load_or_create_keypair,
    read_keypair,
)
from tests.support import poll


def test_keypair_created_once_with_private_modes(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    first = load_or_create_keypair(pki, "minion")
    assert load_or_create_keypair(pki, "minion") == first
    assert stat.S_IMODE((pki / "minion.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    assert read_keypair(pki, "minion").public == first.public


def test_loose_key_mode_is_tightened(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    load_or_create_keypair(pki, "m")
    (pki / "m.key").chmod(0o644)
    load_or_create_keypair(pki, "m")
    assert stat.S_IMODE((pki / "m.key").stat().st_mode) == 0o600


def test_fingerprint_is_stable_and_distinct() -> None:
    a, b = generate_keypair(), generate_keypair()
    assert fingerprint(a.public) == fingerprint(a.public)
    assert fingerprint(a.public) != fingerprint(b.public)
    assert len(fingerprint(a.public).split(":")) == 32


def test_submit_lands_in_pending_and_accept_moves_it(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    key = generate_keypair().public
    assert ring.submit("m1", key) is KeyState.PENDING
    assert ring.ids(KeyState.PENDING) == ["m1"]
    ring.accept("m1")
    entry = ring.lookup_key(key)
    assert entry is not None and (entry.id, entry.state) == ("m1", KeyState.ACCEPTED)
    assert ring.submit("m1", key) is KeyState.ACCEPTED


def test_reject_delete_and_accept_all(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    keys = {m: generate_keypair().public for m in ("a", "b", "c")}
    for m, k in keys.items():
        ring.submit(m, k)
    ring.reject("c")
    assert ring.accept_all() == ["a", "b"]
    assert ring.ids(KeyState.REJECTED) == ["c"]
    ring.delete("c")
    assert ring.lookup_key(keys["c"]) is None
    with pytest.raises(KeyRingError, match="no key"):
        ring.delete("c")


def test_another_key_for_a_known_id_is_refused(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    ring.add("m1", generate_keypair().public, KeyState.ACCEPTED)
    with pytest.raises(KeyRingError, match="different"):
        ring.add("m1", generate_keypair().public, KeyState.PENDING)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200, "a b"])
def test_ids_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(KeyRingError, match="invalid minion id"):
        check_id(bad)


def test_a_second_ring_sees_changes_made_by_another(tmp_path: Path) -> None:
    """The master's ring notices what `saline key` (another process) wrote."""
    master_view, cli_view = KeyRing(tmp_path), KeyRing(tmp_path)
    key = generate_keypair().public
    assert master_view.lookup_key(key) is None
    cli_view.add("m1", key, KeyState.ACCEPTED)
    entry = poll(lambda: master_view.lookup_key(key), timeout=2)
    assert entry is not None and entry.state is KeyState.ACCEPTED


def test_malformed_key_files_are_ignored(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    (tmp_path / "minions" / "junk").write_text("not a key")
    assert ring.ids(KeyState.ACCEPTED) == []


def test_a_second_ring_sees_moves_deletes_and_replaced_files(tmp_path: Path) -> None:
    master_view, cli_view = KeyRing(tmp_path), KeyRing(tmp_path)
    first, second = generate_keypair().public, generate_keypair().public
    cli_view.add("m1", first, KeyState.PENDING)
    poll(lambda: master_view.get("m1", KeyState.PENDING), timeout=2)
    cli_view.accept("m1")
    moved = poll(lambda: master_view.get("m1", KeyState.ACCEPTED), timeout=2)
    assert moved is not None and master_view.get("m1", KeyState.PENDING) is None
    assert master_view.count(KeyState.ACCEPTED) == 1 and master_view.count(KeyState.PENDING) == 0
    cli_view.delete("m1")
    cli_view.add("m1", second, KeyState.ACCEPTED)  # same name, another file (another inode)
    entry = poll(lambda: master_view.lookup_key(second), timeout=2)
    assert entry is not None and entry.id == "m1"
    assert master_view.lookup_key(first) is None
    cli_view.delete("m1")
    poll(lambda: master_view.lookup_key(second) is None, timeout=2)
    assert master_view.entries() == []


def test_adding_keys_reads_no_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hello flood: each new key costs the same, not a read of every key on disk."""
    ring = KeyRing(tmp_path)
    ring.count(KeyState.PENDING)  # the first scan, of empty directories
    reads: list[Path] = []
    real = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    keys = [generate_keypair().public for _ in range(300)]
    for n, key in enumerate(keys):
        ring.add(f"m{n}", key, KeyState.PENDING)
        assert ring.lookup_key(key) is not None
    assert ring.count(KeyState.PENDING) == 300
    ring.accept("m7")
    assert ring.count(KeyState.ACCEPTED) == 1
    ring.delete("m8")
    ring._checked = 0.0  # as if 50 ms had passed: the listing finds only files it knows
    assert ring.count(KeyState.PENDING) == 298
    assert reads == []


def test_a_stale_copy_of_a_key_takes_over_when_the_accepted_one_goes(tmp_path: Path) -> None:
    key = generate_keypair().public
    (tmp_path / "minions_pre").mkdir(mode=0o700)
    (tmp_path / "minions_pre" / "m1").write_text(key + "\n")
    (tmp_path / "minions").mkdir(mode=0o700)
    (tmp_path / "minions" / "m1").write_text(key + "\n")
    ring = KeyRing(tmp_path)
    entry = ring.lookup_key(key)
    assert entry is not None and entry.state is KeyState.ACCEPTED
    (tmp_path / "minions" / "m1").unlink()
    ring._checked = 0.0
    entry = ring.lookup_key(key)
    assert entry is not None and entry.state is KeyState.PENDING
