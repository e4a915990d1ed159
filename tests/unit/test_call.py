"""``saline call --local``'s channel: files and pillar from this node's own roots, in the
shapes the master's replies have, with the master's refusals."""

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from minion.channel import ChannelError
from minion.config import MinionConfig
from minion.executor import execute
from minion.local import LocalRelay
from minion.modules import REGISTRY
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.protocol import Job


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    states, pillar = tmp_path / "states", tmp_path / "pillar"
    (states / "web").mkdir(parents=True)
    (states / "web" / "init.yaml").write_text("x: 1\n")
    pillar.mkdir()
    (pillar / "top.yaml").write_text("'*': [common]\n'G@role:backend': [backend]\n")
    (pillar / "common.yaml").write_text("port: 8080\nowner: '{{ minion_id }}'\n")
    (pillar / "backend.yaml").write_text("db: {password: !secret hunter2}\n")
    (tmp_path / "outside").write_text("not served\n")
    return states, pillar


def _ask(relay: LocalRelay, **request: Any) -> dict[str, Any]:
    return asyncio.run(relay(request))


def test_files_come_from_the_roots_in_the_masters_reply_shape(roots: tuple[Path, Path]) -> None:
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {"role": "backend"})
    reply = _ask(relay, op="file", path="web/init.yaml", have=None)
    digest = hashlib.sha256(b"x: 1\n").hexdigest()
    assert reply == {"path": "web/init.yaml", "sha256": digest, "data": b"x: 1\n", "error": None}
    # a current copy is not sent again
    assert _ask(relay, op="file", path="saline://web/init.yaml", have=digest)["data"] is None


def test_the_second_root_is_searched_after_the_first(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "only.yaml").write_text("y: 2\n")
    (extra / "web").mkdir()
    (extra / "web" / "init.yaml").write_text("shadowed\n")
    relay = LocalRelay([roots[0], extra], [roots[1]], "be1", {})
    assert _ask(relay, op="file", path="only.yaml")["data"] == b"y: 2\n"
    assert _ask(relay, op="file", path="web/init.yaml")["data"] == b"x: 1\n"


@pytest.mark.parametrize(
    "path",
    ["../outside", "/etc/passwd", "web/../../outside", "a\0b", "web\\init.yaml", ""],
)
def test_paths_leaving_the_roots_are_refused(roots: tuple[Path, Path], path: str) -> None:
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {})
    reply = _ask(relay, op="file", path=path)
    assert "refused" in reply["error"] and "data" not in reply


def test_a_symlink_out_of_its_root_is_refused(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    os.symlink(tmp_path / "outside", roots[0] / "leak.yaml")
    os.symlink(roots[0] / "web" / "init.yaml", roots[0] / "inside.yaml")
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {})
    assert "a symlink leads out of" in _ask(relay, op="file", path="leak.yaml")["error"]
    assert _ask(relay, op="file", path="inside.yaml")["data"] == b"x: 1\n"


def test_a_missing_file_says_where_it_was_looked_for(roots: tuple[Path, Path]) -> None:
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {})
    error = _ask(relay, op="file", path="nope.yaml")["error"]
    assert error == f"no such file saline://nope.yaml (file_roots: {roots[0].resolve()})"


def test_the_pillar_is_compiled_for_this_node(roots: tuple[Path, Path]) -> None:
    backend = LocalRelay([roots[0]], [roots[1]], "be1", {"role": "backend"})
    assert _ask(backend, op="pillar") == {
        "pillar": {"port": 8080, "owner": "be1", "db": {"password": "hunter2"}},
        "secrets": ["hunter2"],
        "error": None,
    }
    frontend = LocalRelay([roots[0]], [roots[1]], "fe1", {"role": "frontend"})
    assert _ask(frontend, op="pillar")["pillar"] == {"port": 8080, "owner": "fe1"}


def test_a_broken_pillar_is_an_error_reply(roots: tuple[Path, Path]) -> None:
    (roots[1] / "common.yaml").write_text("port: [8080\n")
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {})
    assert "pillar common.yaml" in _ask(relay, op="pillar")["error"]


def test_an_unknown_request_is_refused(roots: tuple[Path, Path]) -> None:
    relay = LocalRelay([roots[0]], [roots[1]], "be1", {})
    with pytest.raises(ChannelError, match="unknown request"):
        _ask(relay, op="shell")


def test_a_job_child_reads_pillar_and_files_through_the_local_relay(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    """The executor's child, its PipeChannel and the file client, end to end: pillar.get
    masks the secret; a state file is fetched and cached."""
    config = MinionConfig(
        cachedir=tmp_path / "cache", file_roots=[roots[0]], pillar_roots=[roots[1]]
    )
    ctx = Context(
        "be1", config, {"role": "backend"}, SupervisorProvider({}, tmp_path / "sv"), REGISTRY
    )
    relay = LocalRelay(config.file_roots, config.pillar_roots, "be1", {"role": "backend"})

    def run(fun: str, *args: Any) -> Any:
        job = Job(jid="1", fun=fun, args=list(args), timeout=30)
        return asyncio.run(execute(ctx, job, "be1", relay=relay))

    assert run("pillar.get", "db:password").ret == "***"
    assert run("pillar.get", "port").ret == 8080
    (roots[0] / "hello.yaml").write_text(
        f"{tmp_path / 'out.txt'}:\n  file.managed:\n    - contents: 'port {{{{ pillar.port }}}}'\n"
    )
    ret = run("state.apply", "hello")
    assert ret.success, ret.ret
    assert (tmp_path / "out.txt").read_text() == "port 8080"
    assert (tmp_path / "cache" / "files" / "hello.yaml").exists()
