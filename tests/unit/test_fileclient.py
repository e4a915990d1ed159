"""The minion's file client sends the hash it has; unchanged files are not re-sent."""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from minion.fileclient import CachedFileClient
from saline.errors import StateError


class FakeChannel:
    """Answers like the master's file server, and records what was asked and sent."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.asked: list[dict[str, Any]] = []
        self.sent_bytes = 0

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.asked.append({"op": op, **fields})
        data = self.files[fields["path"]]
        digest = hashlib.sha256(data).hexdigest()
        if fields.get("have") == digest:
            return {"path": fields["path"], "sha256": digest, "data": None}
        self.sent_bytes += len(data)
        return {"path": fields["path"], "sha256": digest, "data": data}


def test_unchanged_files_are_not_sent_again(tmp_path: Path) -> None:
    channel = FakeChannel({"web/app.conf": b"x" * 1000})
    cache = tmp_path / "cache"

    def job() -> CachedFileClient:  # each job has its own client over the shared cache
        return CachedFileClient(channel, cache)

    assert job().get("saline://web/app.conf") == b"x" * 1000
    assert job().get("saline://web/app.conf") == b"x" * 1000
    assert channel.sent_bytes == 1000, "the second job moved no content"
    assert channel.asked[1]["have"] == hashlib.sha256(b"x" * 1000).hexdigest()
    channel.files["web/app.conf"] = b"changed"
    assert job().get("saline://web/app.conf") == b"changed"
    assert channel.sent_bytes == 1007


def test_a_job_asks_for_a_file_once(tmp_path: Path) -> None:
    channel = FakeChannel({"t.j2": b"{{ x }}"})
    client = CachedFileClient(channel, tmp_path)
    for _ in range(50):
        assert client.get("saline://t.j2") == b"{{ x }}"
    assert len(channel.asked) == 1


@pytest.mark.parametrize("url", ["saline://../x", "saline:///etc/passwd", "saline://"])
def test_escaping_paths_are_refused_before_asking(tmp_path: Path, url: str) -> None:
    channel = FakeChannel({})
    with pytest.raises(StateError, match="refused"):
        CachedFileClient(channel, tmp_path).get(url)
    assert channel.asked == []


def test_corrupt_transfer_is_an_error(tmp_path: Path) -> None:
    class Liar(FakeChannel):
        def request(self, op: str, **fields: Any) -> dict[str, Any]:
            return {"path": fields["path"], "sha256": "0" * 64, "data": b"tampered"}

    with pytest.raises(StateError, match="corrupt"):
        CachedFileClient(Liar({}), tmp_path).get("saline://a")
