"""The master's file server refuses escapes; pillar is per minion and knows its secrets."""

import os
from pathlib import Path

import pytest

from master.fileserver import FileServer, FileServerError, clean_path
from master.pillar import PillarCompiler, PillarError


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "states"
    (root / "chef").mkdir(parents=True)
    (root / "chef" / "init.yaml").write_text("a: 1\n")
    (tmp_path / "secret.txt").write_text("master-only")
    os.symlink(tmp_path / "secret.txt", root / "leak")
    return root


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "saline://../secret.txt",
        "/etc/passwd",
        "saline:///etc/passwd",
        "chef/../../secret.txt",
        "",
        "a\0b",
        "..\\secret.txt",
    ],
)
def test_escapes_are_refused(roots: Path, path: str) -> None:
    with pytest.raises(FileServerError, match="refused"):
        FileServer([roots]).get(path)


def test_symlink_out_of_the_root_is_refused(roots: Path) -> None:
    with pytest.raises(FileServerError, match="leads outside its root"):
        FileServer([roots]).get("leak")


@pytest.mark.parametrize("target", ["secret.txt", "no-such-file.txt"])
def test_outside_the_roots_is_refused_whether_or_not_it_exists(
    roots: Path, tmp_path: Path, target: str
) -> None:
    """Refused, never "no such file": the answer must not tell what exists outside. Holds
    without the ``..`` check of clean_path too (the resolved path is judged)."""
    os.symlink(tmp_path, roots / "up")  # a directory link out of the root
    server = FileServer([roots])
    for path in (f"up/{target}", f"chef/../../{target}"):
        with pytest.raises(FileServerError, match="refused") as caught:
            server.get(path)
        assert "no such file" not in str(caught.value)


def test_serves_with_hash_and_searches_roots_in_order(roots: Path, tmp_path: Path) -> None:
    second = tmp_path / "more"
    second.mkdir()
    (second / "extra.yaml").write_text("b: 2\n")
    (second / "chef").mkdir()
    (second / "chef" / "init.yaml").write_text("shadowed\n")
    server = FileServer([roots, second])
    served = server.get("saline://chef/init.yaml")
    assert served.data == b"a: 1\n" and served.path == "chef/init.yaml"
    assert len(served.sha256) == 64
    assert server.get("extra.yaml").data == b"b: 2\n"
    with pytest.raises(FileServerError, match="no such file"):
        server.get("nope.yaml")
    assert str(clean_path("saline://a/b.yaml")) == "a/b.yaml"


@pytest.fixture
def pillar_root(tmp_path: Path) -> Path:
    root = tmp_path / "pillar"
    (root / "chef").mkdir(parents=True)
    (root / "top.yaml").write_text(
        "base:\n  '*': [common]\n  'G@role:backend': [chef.backend]\n  'fe1': [chef.fe1]\n"
    )
    (root / "common.yaml").write_text("cluster: {name: lab, members: 3}\n")
    (root / "chef" / "backend.yaml").write_text(
        "cluster: {role: '{{ grains.role }}'}\nsecrets:\n  db_password: !secret hunter2\n"
    )
    (root / "chef" / "fe1.yaml").write_text("frontend_secret: !secret only-fe1\n")
    return root


def test_pillar_is_compiled_per_minion_and_merged(pillar_root: Path) -> None:
    compiler = PillarCompiler([pillar_root])
    be, be_secrets = compiler.compile("be1", {"role": "backend"})
    assert be == {
        "cluster": {"name": "lab", "members": 3, "role": "backend"},
        "secrets": {"db_password": "hunter2"},
    }
    assert be_secrets == {"hunter2"}
    fe, fe_secrets = compiler.compile("fe1", {"role": "frontend"})
    assert fe == {"cluster": {"name": "lab", "members": 3}, "frontend_secret": "only-fe1"}
    assert fe_secrets == {"only-fe1"}
    fe2, _ = compiler.compile("fe2", {"role": "frontend"})
    assert "hunter2" not in repr(fe2) and "only-fe1" not in repr(fe2)


def test_pillar_errors_name_the_file(pillar_root: Path) -> None:
    (pillar_root / "common.yaml").write_text("cluster: [unclosed\n")
    with pytest.raises(PillarError, match=r"common\.yaml:\d+: invalid YAML"):
        PillarCompiler([pillar_root]).compile("be1", {"role": "backend"})


def test_no_pillar_tree_is_an_empty_pillar(tmp_path: Path) -> None:
    assert PillarCompiler([tmp_path / "none"]).compile("x", {}) == ({}, set())


def test_nodegroups_expand_inside_compound_targets(tmp_path: Path) -> None:
    (tmp_path / "top.yaml").write_text(
        "'N@backends and not be3': [db]\n'(N@frontends)': [web]\n'be* or N@frontends': [all]\n"
    )
    for name in ("db", "web", "all"):
        (tmp_path / f"{name}.yaml").write_text(f"{name}: true\n")
    groups = {"backends": "G@role:backend", "frontends": "L@fe1,fe2"}
    compiler = PillarCompiler([tmp_path], groups)
    assert compiler.names_for("be1", {"role": "backend"}) == ["db", "all"]
    assert compiler.names_for("be3", {"role": "backend"}) == ["all"]
    assert compiler.names_for("fe1", {}) == ["web", "all"]
    assert compiler.names_for("fe9", {"role": "backend"}) == ["db"]


def test_an_unknown_nodegroup_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "top.yaml").write_text("'N@nope': [x]\n")
    with pytest.raises(PillarError, match="unknown nodegroup 'nope'"):
        PillarCompiler([tmp_path]).names_for("be1", {})


def test_names_the_filesystem_cannot_take_are_no_such_file(roots: Path) -> None:
    server = FileServer([roots])
    for path in ("a" * 300, "x/" + "b" * 5000 + "/c"):
        with pytest.raises(FileServerError, match="no such file"):
            server.get(path)
