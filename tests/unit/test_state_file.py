"""file.* states on real files in tmp_path; line/keyvalue driven by case files."""

import grp
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.errors import StateError
from states.modules import file
from states.modules.base import StateContext, StateResult

CASES = Path(__file__).parent.parent / "cases" / "states"


class FakeFiles:
    """The master's file server as a dict of ``saline://`` URLs."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}

    def get(self, url: str) -> bytes:
        try:
            return self.files[url]
        except KeyError:
            raise StateError(f"no such file on the master: {url}") from None


def no_call(fun: str, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"file states must not call execution functions ({fun})")


def make_ctx(
    test: bool = False, files: dict[str, bytes] | None = None, secrets: frozenset[str] = frozenset()
) -> StateContext:
    return StateContext(
        minion_id="be1",
        grains={"role": "backend", "ipv4": ["10.0.0.1"]},
        pillar={"chef": {"publish_address": "10.0.0.1"}},
        test=test,
        call=no_call,
        files=FakeFiles(files),
        secrets=secrets,
    )


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root with its type, mode, owner, mtime and content (or link target)."""
    tree: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            path = os.path.join(dirpath, entry)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body: Any = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = Path(path).read_bytes()
            else:
                body = None
            tree[os.path.relpath(path, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                body,
            )
    st = os.lstat(root)
    tree["."] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, None)
    return tree


def assert_test_mode_changes_nothing(
    root: Path, run: Callable[[StateContext], StateResult]
) -> StateResult:
    before = snapshot(root)
    result = run(make_ctx(test=True))
    assert snapshot(root) == before
    return result


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- managed -------------------------------------------------------------------------------


def test_managed_creates_file_with_mode_then_is_a_noop(tmp_path: Path) -> None:
    target = tmp_path / "chef-backend.rb"
    result = file.managed(make_ctx(), str(target), contents="fqdn 'be1'\n", mode="0600")
    assert result.result is True
    assert target.read_bytes() == b"fqdn 'be1'\n"
    assert mode_of(target) == 0o600
    assert result.changes["created"] is True
    assert result.changes["mode"] == "0600"
    assert "+fqdn 'be1'" in result.changes["diff"]
    again = file.managed(make_ctx(), str(target), contents="fqdn 'be1'\n", mode="0600")
    assert again.result is True
    assert again.changes == {}
    assert "up to date" in again.comment
    assert not (tmp_path / "chef-backend.rb.saline-bak").exists()


def test_managed_new_file_defaults_to_0644(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert file.managed(make_ctx(), str(target), contents="x").result is True
    assert mode_of(target) == 0o644


def test_managed_replaces_content_keeps_mode_and_backs_up(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_bytes(b"a = 1\nb = 2\n")
    target.chmod(0o640)
    inode = target.stat().st_ino
    result = file.managed(make_ctx(), str(target), contents="a = 1\nb = 3\n")
    assert result.result is True
    assert target.read_bytes() == b"a = 1\nb = 3\n"
    assert mode_of(target) == 0o640  # undeclared mode is kept
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert set(result.changes) == {"diff"}
    assert "-b = 2\n+b = 3\n" in result.changes["diff"]
    backup = tmp_path / "app.conf.saline-bak"
    assert backup.read_bytes() == b"a = 1\nb = 2\n"
    assert mode_of(backup) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".app.conf.")]


def test_managed_without_backup_leaves_no_copy(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    assert file.managed(make_ctx(), str(target), contents="new\n", backup=False).result is True
    assert target.read_text() == "new\n"
    assert not (tmp_path / "app.conf.saline-bak").exists()


def test_managed_only_mode_differs(tmp_path: Path) -> None:
    target = tmp_path / "secrets.json"
    target.write_text("{}\n")
    target.chmod(0o644)
    result = file.managed(make_ctx(), str(target), contents="{}\n", mode=0o600)
    assert result.result is True
    assert result.changes == {"mode": "0600"}
    assert mode_of(target) == 0o600
    assert not (tmp_path / "secrets.json.saline-bak").exists()


def test_managed_owner_by_name(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("chown tests need root")
    target = tmp_path / "owned"
    target.write_text("x")
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrgid(pwd.getpwnam("nobody").pw_gid)
    result = file.managed(make_ctx(), str(target), user="nobody", group=nogroup.gr_name)
    assert result.result is True
    assert result.changes == {"user": "nobody", "group": nogroup.gr_name}
    assert (target.stat().st_uid, target.stat().st_gid) == (nobody.pw_uid, nogroup.gr_gid)
    assert target.read_text() == "x"  # no contents given: content is not managed
    again = file.managed(make_ctx(), str(target), user="nobody", group=nogroup.gr_name)
    assert again.changes == {} and again.result is True


def test_managed_content_change_keeps_owner(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    target.write_text("old")
    nobody = pwd.getpwnam("nobody")
    os.chown(target, nobody.pw_uid, nobody.pw_gid)
    assert file.managed(make_ctx(), str(target), contents="new").result is True
    assert (target.stat().st_uid, target.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_managed_unknown_user_fails_and_touches_nothing(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = file.managed(make_ctx(), str(tmp_path / "f"), contents="x", user="no_such_user_x")
    assert result.result is False
    assert "no such user: no_such_user_x" in result.comment
    assert snapshot(tmp_path) == before


def test_managed_source_rendered_with_jinja(tmp_path: Path) -> None:
    template = (
        b"publish_address '{{ pillar.chef.publish_address }}'\n"
        b"# {{ minion_id }} {{ grains.role }} {{ extra }}\n"
    )
    ctx = make_ctx(files={"saline://chef/backend.rb.j2": template})
    target = tmp_path / "chef-backend.rb"
    result = file.managed(
        ctx,
        str(target),
        source="saline://chef/backend.rb.j2",
        template="jinja",
        context={"extra": "from-context"},
    )
    assert result.result is True, result.comment
    assert target.read_text() == "publish_address '10.0.0.1'\n# be1 backend from-context\n"


def test_managed_source_verbatim_without_template(tmp_path: Path) -> None:
    raw = b"{{ not rendered }}\n\x00\xff"
    ctx = make_ctx(files={"saline://raw.bin": raw})
    target = tmp_path / "raw.bin"
    result = file.managed(ctx, str(target), source="saline://raw.bin")
    assert result.result is True
    assert target.read_bytes() == raw
    assert result.changes["diff"] == "<binary content differs>"


def test_managed_missing_source_and_bad_template_fail(tmp_path: Path) -> None:
    target = str(tmp_path / "f")
    missing = file.managed(make_ctx(), target, source="saline://nope")
    assert missing.result is False and "saline://nope" in missing.comment
    ctx = make_ctx(files={"saline://t": b"{{ pillar.missing }}"})
    undefined = file.managed(ctx, target, source="saline://t", template="jinja")
    assert undefined.result is False and "missing" in undefined.comment
    both = file.managed(make_ctx(), target, contents="x", source="saline://t")
    assert both.result is False and "not both" in both.comment
    assert not os.path.exists(target)


def test_managed_sensitive_hides_diff(tmp_path: Path) -> None:
    target = tmp_path / "secrets.json"
    target.write_text('{"password": "old-secret"}\n')
    result = file.managed(
        make_ctx(), str(target), contents='{"password": "new-secret"}\n', sensitive=True
    )
    assert result.result is True
    assert result.changes["diff"] == "<sensitive: diff hidden>"
    assert "secret" not in repr(result.model_dump()).replace("secrets.json", "")
    assert target.read_text() == '{"password": "new-secret"}\n'


def test_managed_redacts_context_secrets_from_diff(tmp_path: Path) -> None:
    target = tmp_path / "pg.conf"
    ctx = make_ctx(secrets=frozenset({"hunter2"}))
    result = file.managed(ctx, str(target), contents="password = 'hunter2'\n")
    assert result.result is True
    assert "hunter2" not in result.changes["diff"]
    assert "***" in result.changes["diff"]


def test_managed_diff_is_truncated(tmp_path: Path) -> None:
    target = tmp_path / "big"
    contents = "".join(f"line {i}\n" for i in range(2000))
    result = file.managed(make_ctx(), str(target), contents=contents)
    diff_lines = result.changes["diff"].splitlines()
    assert len(diff_lines) == file.MAX_DIFF_LINES + 1
    assert diff_lines[-1].startswith("... diff truncated:")


def test_managed_missing_parent(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "chef-backend" / "chef-backend.rb"
    result = file.managed(make_ctx(), str(target), contents="x\n")
    assert result.result is False
    assert f"parent directory {target.parent} does not exist" in result.comment
    assert "makedirs" in result.comment
    assert not target.parent.exists()
    created = file.managed(make_ctx(), str(target), contents="x\n", makedirs=True)
    assert created.result is True and target.read_text() == "x\n"


def test_managed_refuses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "relative/path", "contents": "x"}, "must be absolute"),
        ({"name": str(tmp_path / "adir"), "contents": "x"}, "not a regular file"),
        ({"name": str(tmp_path / "f"), "contents": "x", "mode": "rw-r--r--"}, "invalid mode"),
        ({"name": str(tmp_path / "f"), "contents": "x", "mode": 0o17777}, "out of range"),
        ({"name": str(tmp_path / "f"), "contents": "x", "template": "mako"}, "unsupported"),
        ({"name": str(tmp_path / "f"), "contents": 5}, "contents must be text"),
    ]
    for kwargs, message in cases:
        result = file.managed(make_ctx(), **kwargs)
        assert result.result is False, kwargs
        assert message in result.comment, (kwargs, result.comment)
    assert not (tmp_path / "f").exists()


def test_managed_follows_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    assert file.managed(make_ctx(), str(link), contents="new\n").result is True
    assert link.is_symlink() and real.read_text() == "new\n"


def test_managed_test_mode_changes_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "existing.conf"
    existing.write_text("old\n")
    existing.chmod(0o644)
    new = assert_test_mode_changes_nothing(
        tmp_path,
        lambda ctx: file.managed(ctx, str(tmp_path / "sub" / "new"), contents="x\n", makedirs=True),
    )
    assert new.result is None
    assert new.changes["created"] is True and "would create" in new.comment
    update = assert_test_mode_changes_nothing(
        tmp_path,
        lambda ctx: file.managed(ctx, str(existing), contents="new\n", mode="0600"),
    )
    assert update.result is None
    assert update.changes["mode"] == "0600" and "+new" in update.changes["diff"]
    assert "would update" in update.comment
    noop = assert_test_mode_changes_nothing(
        tmp_path, lambda ctx: file.managed(ctx, str(existing), contents="old\n")
    )
    assert noop.result is True and noop.changes == {}


# -- directory, absent, symlink, exists ----------------------------------------------------


def test_directory_created_with_mode_then_noop(tmp_path: Path) -> None:
    target = tmp_path / "var" / "opt" / "chef-backend"
    result = file.directory(make_ctx(), str(target), mode="0750")
    assert result.result is True
    assert result.changes == {"created": True, "mode": "0750"}
    assert target.is_dir() and mode_of(target) == 0o750
    again = file.directory(make_ctx(), str(target), mode="0750")
    assert again.result is True and again.changes == {} and "up to date" in again.comment
    chmod = file.directory(make_ctx(), str(target), mode="0700")
    assert chmod.changes == {"mode": "0700"} and mode_of(target) == 0o700


def test_directory_failures_and_test_mode(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    clash = file.directory(make_ctx(), str(tmp_path / "afile"))
    assert clash.result is False and "not a directory" in clash.comment
    no_parent = file.directory(make_ctx(), str(tmp_path / "a" / "b"), makedirs=False)
    assert no_parent.result is False and "makedirs" in no_parent.comment
    would = assert_test_mode_changes_nothing(
        tmp_path, lambda ctx: file.directory(ctx, str(tmp_path / "a" / "b"), mode="0700")
    )
    assert would.result is None and would.changes == {"created": True, "mode": "0700"}


def test_absent_removes_file_tree_and_link_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "deep").mkdir(parents=True)
    (tree / "deep" / "f").write_text("x")
    keep = tmp_path / "keep"
    keep.write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(keep)
    for path in (tree, link):
        result = file.absent(make_ctx(), str(path))
        assert result.result is True and result.changes == {"removed": str(path)}
        assert not os.path.lexists(path)
        again = file.absent(make_ctx(), str(path))
        assert again.result is True and again.changes == {} and "already absent" in again.comment
    assert keep.read_text() == "kept"


def test_absent_refuses_root_and_empty_and_test_mode(tmp_path: Path) -> None:
    for name in ("/", "//", "/..", ""):
        result = file.absent(make_ctx(), name)
        assert result.result is False, name
    assert "root" in file.absent(make_ctx(), "/").comment
    (tmp_path / "f").write_text("x")
    would = assert_test_mode_changes_nothing(
        tmp_path, lambda ctx: file.absent(ctx, str(tmp_path / "f"))
    )
    assert would.result is None and "would remove" in would.comment


def test_symlink_create_retarget_and_force(tmp_path: Path) -> None:
    link = tmp_path / "current"
    result = file.symlink(make_ctx(), str(link), target="/opt/v1")
    assert result.result is True and os.readlink(link) == "/opt/v1"
    assert result.changes == {"target": "/opt/v1"}
    again = file.symlink(make_ctx(), str(link), target="/opt/v1")
    assert again.result is True and again.changes == {} and "already points" in again.comment
    moved = file.symlink(make_ctx(), str(link), target="/opt/v2")
    assert moved.changes == {"target": "/opt/v2", "old_target": "/opt/v1"}
    assert os.readlink(link) == "/opt/v2"
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "f").write_text("x")
    refused = file.symlink(make_ctx(), str(blocker), target="/opt/v2")
    assert refused.result is False and "force" in refused.comment and blocker.is_dir()
    forced = file.symlink(make_ctx(), str(blocker), target="/opt/v2", force=True)
    assert forced.result is True and forced.changes["replaced"] == "directory"
    assert os.readlink(blocker) == "/opt/v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "current"]


def test_symlink_test_mode(tmp_path: Path) -> None:
    (tmp_path / "current").symlink_to("/opt/v1")
    would = assert_test_mode_changes_nothing(
        tmp_path, lambda ctx: file.symlink(ctx, str(tmp_path / "current"), target="/opt/v2")
    )
    assert would.result is None and would.changes["old_target"] == "/opt/v1"


def test_exists_only_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    assert file.exists(make_ctx(), str(tmp_path / "f")).result is True
    assert file.exists(make_ctx(), str(tmp_path / "dangling")).result is True
    missing = file.exists(make_ctx(test=True), str(tmp_path / "nope"))
    assert missing.result is False and "does not exist" in missing.comment
    assert snapshot(tmp_path) == before


# -- line and keyvalue: case files ---------------------------------------------------------


def load_cases(function: str) -> list[Any]:
    paths = sorted((CASES / f"file.{function}").glob("*.yaml"))
    assert paths, f"no case files for file.{function}"
    return [pytest.param(yaml.safe_load(p.read_text()), id=p.stem) for p in paths]


def run_case(function: str, case: dict[str, Any], tmp_path: Path) -> None:
    fn = file.FUNCTIONS[function]
    target = tmp_path / "config"
    original = case["before"].encode()
    target.write_bytes(original)
    target.chmod(0o640)
    noop = "after" not in case

    would = assert_test_mode_changes_nothing(
        tmp_path, lambda ctx: fn(ctx, str(target), **case["args"])
    )
    assert would.result is (True if noop else None)

    applied = fn(make_ctx(), str(target), **case["args"])
    if noop:
        assert applied.result is True and applied.changes == {}
        assert case["noop_reason"] in applied.comment
        assert target.read_bytes() == original
        return
    assert applied.result is True, applied.comment
    assert target.read_bytes() == case["after"].encode()
    assert applied.changes["diff"].startswith("---")
    assert applied.changes["diff"] == would.changes["diff"]
    assert mode_of(target) == 0o640  # an edit keeps the file's mode

    again = fn(make_ctx(), str(target), **case["args"])
    assert again.result is True and again.changes == {}
    assert str(target) in again.comment and again.comment != str(target)


@pytest.mark.parametrize("case", load_cases("keyvalue"))
def test_keyvalue_case(case: dict[str, Any], tmp_path: Path) -> None:
    run_case("keyvalue", case, tmp_path)


@pytest.mark.parametrize("case", load_cases("line"))
def test_line_case(case: dict[str, Any], tmp_path: Path) -> None:
    run_case("line", case, tmp_path)


def test_line_and_keyvalue_failures(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.rb")
    result = file.keyvalue(make_ctx(), missing, key="publish_address", value="10.0.0.1")
    assert result.result is False and "file.managed" in result.comment
    assert file.line(make_ctx(), missing, content="x").result is False
    gone = file.line(make_ctx(), missing, content="x", mode="absent")
    assert gone.result is True and "no line to remove" in gone.comment
    target = tmp_path / "c"
    target.write_text("a\n")
    for bad in (
        file.line(make_ctx(), str(target), content="x", match="("),
        file.line(make_ctx(), str(target), content="x", mode="sometimes"),
        file.line(make_ctx(), str(target), content="two\nlines"),
        file.keyvalue(make_ctx(), str(target), key="k", value="v\nextra = 1"),
        file.keyvalue(make_ctx(), str(target), key="", value="v"),
    ):
        assert bad.result is False
    assert target.read_text() == "a\n"


def test_keyvalue_keeps_non_utf8_bytes(tmp_path: Path) -> None:
    target = tmp_path / "latin1.conf"
    target.write_bytes(b"# caf\xe9\nport = 1\n")
    result = file.keyvalue(make_ctx(), str(target), key="port", value=2, separator=" = ", quote="")
    assert result.result is True
    assert target.read_bytes() == b"# caf\xe9\nport = 2\n"
