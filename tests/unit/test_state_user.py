"""user.present and group.present creating real, uniquely named system accounts (root only)."""

import grp
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saline.errors import StateError
from states.modules import group, user
from states.modules.base import StateContext


class NoFiles:
    def get(self, url: str) -> bytes:
        raise StateError(f"no file server in this test: {url}")


def no_call(fun: str, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"user/group states must not call execution functions ({fun})")


def make_ctx(test: bool = False) -> StateContext:
    return StateContext(
        minion_id="be1", grains={}, pillar={}, test=test, call=no_call, files=NoFiles()
    )


def exists(kind: str, name: str) -> bool:
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


def free_gid() -> int:
    used = {g.gr_gid for g in grp.getgrall()}
    return next(gid for gid in range(23000, 24000) if gid not in used)


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Unique account names; every one is deleted (user and group) afterwards."""
    if os.geteuid() != 0:
        pytest.fail("user/group states need root")
    created: list[str] = []
    yield created
    for name in created:
        if exists("user", name):
            subprocess.run(["userdel", name], check=True, capture_output=True)
        if exists("group", name):
            subprocess.run(["groupdel", name], check=True, capture_output=True)
        assert not exists("user", name) and not exists("group", name)


def new_name(names: list[str]) -> str:
    name = f"saline_t_{secrets.token_hex(4)}"
    names.append(name)
    return name


def test_group_present_creates_then_noop(names: list[str]) -> None:
    name = new_name(names)
    would = group.present(make_ctx(test=True), name, system=True)
    assert would.result is None and would.changes == {"created": True}
    assert not exists("group", name)
    result = group.present(make_ctx(), name, system=True)
    assert result.result is True, result.comment
    gid = grp.getgrnam(name).gr_gid
    assert gid < 1000  # system range
    assert result.changes == {"created": True, "gid": gid}
    again = group.present(make_ctx(), name, system=True)
    assert again.result is True and again.changes == {}
    assert again.comment == f"group {name} exists (gid {gid})"


def test_group_gid_changed_only_outside_test_mode(names: list[str]) -> None:
    name = new_name(names)
    assert group.present(make_ctx(), name).result is True
    target = free_gid()
    would = group.present(make_ctx(test=True), name, gid=target)
    assert would.result is None and would.changes == {"gid": target}
    assert grp.getgrnam(name).gr_gid != target
    result = group.present(make_ctx(), name, gid=target)
    assert result.result is True and grp.getgrnam(name).gr_gid == target
    assert group.present(make_ctx(), name, gid=target).changes == {}


def test_invalid_names_are_refused() -> None:
    for bad in ("-rf", "a b", "", "x" * 40):
        assert group.present(make_ctx(), bad).result is False
        assert user.present(make_ctx(), bad).result is False


def test_user_present_creates_system_account(names: list[str], tmp_path: Path) -> None:
    name = new_name(names)
    extra = new_name(names)
    assert group.present(make_ctx(), extra, system=True).result is True
    home = str(tmp_path / "home")
    spec: dict[str, Any] = {
        "system": True,
        "home": home,
        "shell": "/usr/sbin/nologin",
        "groups": [extra],
        "createhome": False,
    }
    would = user.present(make_ctx(test=True), name, **spec)
    assert would.result is None
    assert would.changes == {
        "created": True,
        "home": home,
        "shell": "/usr/sbin/nologin",
        "groups": [extra],
    }
    assert not exists("user", name)
    result = user.present(make_ctx(), name, **spec)
    assert result.result is True, result.comment
    entry = pwd.getpwnam(name)
    assert entry.pw_uid < 1000 and entry.pw_dir == home and entry.pw_shell == "/usr/sbin/nologin"
    assert name in grp.getgrnam(extra).gr_mem
    assert not os.path.exists(home)
    again = user.present(make_ctx(), name, **spec)
    assert again.result is True and again.changes == {}
    assert again.comment == f"user {name} exists as declared"
    as_text = user.present(make_ctx(), name, groups=extra)  # "a,b" form, not letters
    assert as_text.result is True and as_text.changes == {}


def test_user_present_changes_only_what_differs(names: list[str], tmp_path: Path) -> None:
    name = new_name(names)
    extra = new_name(names)
    assert group.present(make_ctx(), extra).result is True
    home = str(tmp_path / "home")
    created = user.present(make_ctx(), name, system=True, home=home, groups=[extra])
    assert created.result is True, created.comment
    assert os.path.isdir(home)  # createhome defaults to true
    uid = pwd.getpwnam(name).pw_uid
    would = user.present(make_ctx(test=True), name, shell="/bin/bash", groups=[])
    assert would.result is None and would.changes == {"shell": "/bin/bash", "groups": []}
    assert name in grp.getgrnam(extra).gr_mem
    result = user.present(make_ctx(), name, home=home, shell="/bin/bash", groups=[])
    assert result.result is True and result.changes == {"shell": "/bin/bash", "groups": []}
    entry = pwd.getpwnam(name)
    assert entry.pw_shell == "/bin/bash" and entry.pw_uid == uid
    assert name not in grp.getgrnam(extra).gr_mem


def test_user_joins_existing_same_named_group(names: list[str]) -> None:
    name = new_name(names)
    assert group.present(make_ctx(), name, system=True).result is True
    result = user.present(make_ctx(), name, system=True, createhome=False)
    assert result.result is True, result.comment
    assert pwd.getpwnam(name).pw_gid == grp.getgrnam(name).gr_gid
    gid_by_name = user.present(make_ctx(), name, gid=name)
    assert gid_by_name.result is True and gid_by_name.changes == {}


def test_user_with_missing_group_fails_with_tool_message(names: list[str]) -> None:
    name = new_name(names)
    result = user.present(make_ctx(), name, system=True, groups=["saline_t_nosuchgroup"])
    assert result.result is False
    assert "useradd failed" in result.comment and "saline_t_nosuchgroup" in result.comment
    assert not exists("user", name)
