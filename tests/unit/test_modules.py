"""Execution modules called directly with a real Context."""

import hashlib
import os
import pwd
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import saline
from minion import modules
from minion.config import MinionConfig, ServiceSpec
from minion.modules import cmd, file, grains, service, test
from minion.modules import sys as sys_module
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from tests.support import poll, process_gone


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    config = MinionConfig(
        id="m1",
        cachedir=tmp_path / "cache",
        pki_dir=tmp_path / "pki",
        grains={"role": "backend"},
        services={"sleeper": ServiceSpec(argv=["sleep", "300"], stop_timeout=2)},
    )
    provider = SupervisorProvider(config.services, config.cachedir / "services")
    context = Context(
        minion_id="m1",
        config=config,
        grains={"id": "m1", "role": "backend", "nested": {"a": {"b": 7}}, "ipv4": ["10.0.0.1"]},
        services=provider,
        functions=modules.registry(),
    )
    yield context
    provider.stop("sleeper")


# -- registry ------------------------------------------------------------------------------


def test_registry_lists_every_module_function_by_full_name() -> None:
    reg = modules.registry()
    assert reg["test.ping"] is test.ping
    assert reg["file.hash"] is file.hash_
    assert reg["sys.doc"] is sys_module.doc
    for name, module in modules.MODULES.items():
        for short in module.FUNCTIONS:
            assert f"{name}.{short}" in reg
    assert set(modules.MODULES) >= {"test", "cmd", "file", "grains", "sys", "service", "state"}
    assert dict(modules.REGISTRY) == reg


def test_every_function_has_a_docstring() -> None:
    missing = [name for name, fn in modules.registry().items() if not (fn.__doc__ or "").strip()]
    assert missing == []


# -- test ----------------------------------------------------------------------------------


def test_test_module(ctx: Context) -> None:
    assert test.ping(ctx) is True
    assert test.echo(ctx, "héllo") == "héllo"
    assert test.version(ctx) == saline.__version__
    started = time.monotonic()
    assert test.sleep(ctx, "0.05") is True
    assert time.monotonic() - started >= 0.05
    with pytest.raises(ExecutionError, match=">= 0"):
        test.sleep(ctx, -1)
    with pytest.raises(ExecutionError, match="number"):
        test.sleep(ctx, "soon")


# -- cmd -----------------------------------------------------------------------------------


def run(ctx: Context, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    outcome = cmd.run(ctx, *args, **kwargs)
    assert isinstance(outcome, Outcome)
    assert outcome.value["retcode"] == outcome.retcode
    return outcome.value, outcome.retcode


def test_cmd_run_argv(ctx: Context) -> None:
    value, retcode = run(ctx, ["echo", "hi  there", "$HOME"])
    assert value == {"stdout": "hi  there $HOME\n", "stderr": "", "retcode": 0}
    assert retcode == 0


def test_cmd_run_string_is_split_not_shelled(ctx: Context) -> None:
    value, _ = run(ctx, "printf '%s|' 'a b' c")
    assert value["stdout"] == "a b|c|"


def test_cmd_run_without_shell_does_not_interpret_metacharacters(
    ctx: Context, tmp_path: Path
) -> None:
    # a string with shell syntax is refused rather than run with literal ';' arguments
    with pytest.raises(ExecutionError, match=r"uses shell syntax \(`;`\)"):
        run(ctx, "echo $HOME; touch x", cwd=str(tmp_path))
    # "false" as a CLI string must not be truthy: refused the same way, nothing runs
    with pytest.raises(ExecutionError, match="uses shell syntax"):
        run(ctx, "echo $HOME; touch x", shell="false", cwd=str(tmp_path))
    assert not (tmp_path / "x").exists()
    # as argv, metacharacters are plain data
    value, retcode = run(ctx, ["echo", "$HOME;", "touch", "x"], cwd=str(tmp_path))
    assert retcode == 0
    assert value["stdout"] == "$HOME; touch x\n"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("shell", [True, "true", "True"])
def test_cmd_run_shell_only_when_asked(ctx: Context, tmp_path: Path, shell: object) -> None:
    value, retcode = run(ctx, "echo $HOME; touch x", shell=shell, cwd=str(tmp_path))
    assert retcode == 0
    assert value["stdout"] == os.environ["HOME"] + "\n"
    assert (tmp_path / "x").exists()


def test_cmd_run_rejects_ambiguous_shell_flag(ctx: Context) -> None:
    with pytest.raises(ExecutionError, match="shell must be a boolean"):
        cmd.run(ctx, "true", shell="maybe")


def test_cmd_run_nonzero_retcode_and_stderr(ctx: Context) -> None:
    value, retcode = run(ctx, ["sh", "-c", "echo oops >&2; exit 3"])
    assert retcode == 3
    assert value["stderr"] == "oops\n"


def test_cmd_run_timeout_kills_process_group(ctx: Context, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(ExecutionError, match=r"timed out after 0.5s"):
        cmd.run(ctx, script, shell=True, timeout=0.5)
    # The grandchild holds stdout open; returning promptly proves we did not wait on it.
    assert time.monotonic() - started < 10
    assert poll(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    assert poll(lambda: process_gone(grandchild))


def test_cmd_run_missing_executable(ctx: Context) -> None:
    with pytest.raises(ExecutionError, match="command not found: no-such-binary-xyz"):
        cmd.run(ctx, ["no-such-binary-xyz", "arg"])
    with pytest.raises(ExecutionError, match="empty command"):
        cmd.run(ctx, "   ")


def test_cmd_run_cwd(ctx: Context, tmp_path: Path) -> None:
    value, _ = run(ctx, ["pwd"], cwd=str(tmp_path))
    assert value["stdout"] == f"{tmp_path}\n"
    with pytest.raises(ExecutionError, match="no such directory"):
        cmd.run(ctx, ["pwd"], cwd=str(tmp_path / "missing"))


def test_cmd_run_env_merges_over_environment(ctx: Context) -> None:
    # printenv is found through the inherited PATH, so the environment was merged, not replaced
    value, _ = run(ctx, "printenv SALINE_TEST_VAR", env={"SALINE_TEST_VAR": 42})
    assert value["stdout"] == "42\n"
    with pytest.raises(ExecutionError, match="env must be a mapping"):
        cmd.run(ctx, "true", env="A=1")  # type: ignore[arg-type]


def test_cmd_run_stdin(ctx: Context) -> None:
    value, _ = run(ctx, ["cat"], stdin="fed in")
    assert value["stdout"] == "fed in"
    value, _ = run(ctx, ["cat"])  # no stdin: empty, never the minion's own
    assert value["stdout"] == ""


def test_cmd_run_large_output(ctx: Context) -> None:
    code = "import sys; sys.stdout.write('x' * 10_000_000); sys.stderr.write('e' * 2_000_000)"
    value, retcode = run(ctx, [sys.executable, "-c", code])
    assert retcode == 0
    assert len(str(value["stdout"])) == 10_000_000
    assert len(str(value["stderr"])) == 2_000_000


def test_cmd_run_undecodable_output_is_replaced(ctx: Context) -> None:
    value, _ = run(ctx, ["printf", "a\\377b"])
    assert value["stdout"] == "a\ufffdb"


def test_cmd_run_invalid_timeout(ctx: Context) -> None:
    with pytest.raises(ExecutionError, match="timeout"):
        cmd.run(ctx, "true", timeout=0)


# -- file ----------------------------------------------------------------------------------


def test_file_write_then_read(ctx: Context, tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    result = file.write(ctx, str(target), "héllo\n")
    assert result == {"path": str(target), "bytes": len("héllo\n".encode())}
    assert file.read(ctx, str(target)) == "héllo\n"
    assert file.read(ctx, str(target), binary="true") == "héllo\n".encode()
    file.write(ctx, str(target), b"\x00\xff")
    assert file.read(ctx, str(target), binary=True) == b"\x00\xff"


def test_file_write_is_atomic_rename(ctx: Context, tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("old")
    old_inode = target.stat().st_ino
    with open(target) as reader:
        file.write(ctx, str(target), "new")
        # a reader of the old file still sees it whole: the new one was renamed over it
        assert reader.read() == "old"
    assert target.read_text() == "new"
    assert target.stat().st_ino != old_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no temp file left


def test_file_write_modes(ctx: Context, tmp_path: Path) -> None:
    new = tmp_path / "new"
    file.write(ctx, str(new), "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask

    secret = tmp_path / "secret"
    file.write(ctx, str(secret), "x", mode="0600")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    existing = tmp_path / "existing"
    existing.write_text("x")
    existing.chmod(0o640)
    file.write(ctx, str(existing), "y")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    file.write(ctx, str(existing), "z", mode="755")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755

    with pytest.raises(ExecutionError, match="invalid mode"):
        file.write(ctx, str(existing), "z", mode="rwx")


def test_file_write_makedirs(ctx: Context, tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    with pytest.raises(ExecutionError, match="no such directory"):
        file.write(ctx, str(target), "x")
    file.write(ctx, str(target), "x", makedirs="true")
    assert target.read_text() == "x"


def test_file_write_follows_symlink(ctx: Context, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    file.write(ctx, str(link), "new")
    assert link.is_symlink()
    assert real.read_text() == "new"


def test_file_write_refuses_directory(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(ExecutionError, match="is a directory"):
        file.write(ctx, str(tmp_path), "x")


def test_file_missing(ctx: Context, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    for fn in (file.read, file.stat, file.hash_):
        with pytest.raises(ExecutionError, match=r"no such file: .*nope"):
            fn(ctx, missing)


def test_file_stat(ctx: Context, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"12345")
    target.chmod(0o640)
    info = file.stat(ctx, str(target))
    assert info["size"] == 5
    assert info["mode"] == "0640"
    assert info["uid"] == os.getuid()
    assert info["gid"] == os.getgid()
    assert info["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert isinstance(info["group"], str)
    assert info["mtime"] == target.stat().st_mtime
    assert info["type"] == "file"
    assert file.stat(ctx, str(tmp_path))["type"] == "directory"
    (tmp_path / "l").symlink_to(target)
    assert file.stat(ctx, str(tmp_path / "l"))["type"] == "symlink"
    assert file.stat(ctx, "/dev/null")["type"] == "other"


def test_file_hash(ctx: Context, tmp_path: Path) -> None:
    target = tmp_path / "blob"
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several read chunks
    target.write_bytes(data)
    assert file.hash_(ctx, str(target)) == hashlib.sha256(data).hexdigest()
    for algo in ("sha512", "sha1", "md5"):
        assert file.hash_(ctx, str(target), algo) == hashlib.new(algo, data).hexdigest()
    with pytest.raises(ExecutionError, match="unsupported algo"):
        file.hash_(ctx, str(target), "sha3_256")


# -- grains, sys, service ------------------------------------------------------------------


def test_grains_items_and_get(ctx: Context) -> None:
    assert grains.items(ctx) is ctx.grains
    assert grains.get(ctx, "role") == "backend"
    assert grains.get(ctx, "nested:a:b") == 7
    assert grains.get(ctx, "ipv4:0") == "10.0.0.1"
    assert grains.get(ctx, "nested:a:missing", "dflt") == "dflt"
    assert grains.get(ctx, "role:deeper") is None
    assert grains.get(ctx, "ipv4:9", default=[]) == []
    assert grains.get(ctx, "nested/a/b", delimiter="/") == 7


def test_sys_list_functions(ctx: Context) -> None:
    assert sys_module.list_functions(ctx, "test.*") == [
        "test.echo",
        "test.ping",
        "test.sleep",
        "test.version",
    ]
    everything = sys_module.list_functions(ctx)
    assert everything == sorted(modules.registry())
    assert sys_module.list_functions(ctx, "nope.*") == []


def test_sys_doc(ctx: Context) -> None:
    one = sys_module.doc(ctx, "test.ping")
    assert list(one) == ["test.ping"]
    assert one["test.ping"].startswith("Return True")
    by_module = sys_module.doc(ctx, "test")
    assert list(by_module) == ["test.echo", "test.ping", "test.sleep", "test.version"]
    assert sys_module.doc(ctx, "test.*") == by_module
    assert "shell" in sys_module.doc(ctx, "cmd.run")["cmd.run"]
    assert set(sys_module.doc(ctx)) == set(modules.registry())
    assert list(sys_module.doc(ctx, "file.h*")) == ["file.hash"]
    with pytest.raises(ExecutionError, match="no such function or module: nope"):
        sys_module.doc(ctx, "nope")


def test_service_module_uses_the_provider(ctx: Context) -> None:
    assert service.status(ctx, "sleeper")["running"] is False
    started = service.start(ctx, "sleeper")
    assert started["running"] is True
    assert isinstance(started["pid"], int)
    assert service.status(ctx, "sleeper")["pid"] == started["pid"]
    restarted = service.restart(ctx, "sleeper")
    assert restarted["running"] is True
    assert restarted["pid"] != started["pid"]
    stopped = service.stop(ctx, "sleeper")
    assert stopped == {
        "name": "sleeper",
        "running": False,
        "pid": None,
        "enabled": None,
        "detail": "stopped",
    }
    with pytest.raises(ExecutionError, match="unknown service 'ghost'"):
        service.status(ctx, "ghost")
