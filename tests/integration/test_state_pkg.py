"""pkg.installed for real, against a local apt repository the test builds: no network.

Two versions of a dummy package (``saline-test-dummy`` 1.0 and 1.1, one file under
/usr/share/saline-test-dummy/) are built with ``dpkg-deb`` and indexed into a flat
repository by this module (no dpkg-dev). ``APT_CONFIG`` points apt, and so the apt-get
runs of states/modules/pkg.py, at a throwaway configuration: its only source is that
repository (``file:``), with lists, cache, logs and apt state of its own and none of the
host's sources or configuration parts. Installs land in the host's real dpkg database:
needs root, and every test purges the package before and after.
"""

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saline.errors import StateError
from states.modules import pkg
from states.modules.base import StateContext

PACKAGE = "saline-test-dummy"
VERSIONS = ("1.0", "1.1")
#: the one file each version ships holds its version
VERSION_FILE = Path("/usr/share") / PACKAGE / "VERSION"
#: wait for another apt/dpkg run's lock, as pkg.py does
LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=120"]


@dataclass(frozen=True)
class LocalApt:
    """The throwaway apt configuration, in effect (``APT_CONFIG``) while a test runs."""

    repo: Path
    sources: Path
    lists: Path


class NoFiles:
    def get(self, url: str) -> bytes:
        raise StateError(f"no file server in this test: {url}")


def no_call(fun: str, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"pkg states must not call execution functions ({fun})")


def make_ctx(test: bool = False) -> StateContext:
    return StateContext(
        minion_id="be1", grains={}, pillar={}, test=test, call=no_call, files=NoFiles()
    )


def dpkg_status(name: str) -> str:
    """``"<status> <version>"`` from the host's dpkg database, "" if it never heard of it."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else ""


def shipped_version() -> str:
    return VERSION_FILE.read_text().strip()


def _control(version: str) -> dict[str, str]:
    return {
        "Package": PACKAGE,
        "Version": version,
        "Architecture": "all",
        "Maintainer": "saline tests <tests@saline.invalid>",
        "Installed-Size": "1",
        "Section": "misc",
        "Priority": "optional",
        "Description": "saline test package\n test data for pkg.installed; safe to purge",
    }


def _stanza(fields: dict[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def _build_deb(work: Path, version: str, repo: Path) -> Path:
    tree = work / f"{PACKAGE}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    shipped = tree / VERSION_FILE.relative_to("/")
    shipped.parent.mkdir(parents=True)
    shipped.write_text(f"{version}\n")
    (tree / "DEBIAN" / "control").write_text(_stanza(_control(version)))
    # dpkg-deb wants 0755 directories whatever the umask
    for directory, _, files in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    deb = repo / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return deb


def _packages_entry(version: str, deb: Path) -> str:
    """The ``Packages`` stanza of one .deb, as dpkg-scanpackages would write it."""
    data = deb.read_bytes()
    fields = _control(version)
    description = fields.pop("Description")
    fields |= {
        "Filename": f"./{deb.name}",
        "Size": str(len(data)),
        "SHA256": hashlib.sha256(data).hexdigest(),
        "Description": description,
    }
    return _stanza(fields)


def _purge() -> None:
    """Purge the dummy package from the host if dpkg knows it at all."""
    if not dpkg_status(PACKAGE):
        return
    subprocess.run(
        ["apt-get", "-q", "-y", *LOCK_WAIT, "purge", PACKAGE],
        check=True,
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=180,
    )


@pytest.fixture(scope="module")
def local_apt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApt]:
    """Build the repository and the apt configuration; ``APT_CONFIG`` set for the module."""
    if os.geteuid() != 0:
        pytest.fail("pkg states install into the host's dpkg database: they need root")
    root = tmp_path_factory.mktemp("apt")
    repo, empty, lists = root / "repo", root / "empty", root / "lists"
    for directory in (repo, empty, lists / "partial", root / "state", root / "log"):
        directory.mkdir(parents=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True)
    entries = [_packages_entry(v, _build_deb(root / "build", v, repo)) for v in VERSIONS]
    (repo / "Packages").write_text("\n".join(entries))
    sources = root / "sources.list"
    sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
    config = root / "apt.conf"
    # Dir::State::status is left alone: installs go to the host's dpkg database.
    config.write_text(
        f'Dir::Etc::SourceList "{sources}";\n'
        f'Dir::Etc::SourceParts "{empty}";\n'
        f'Dir::Etc::Parts "{empty}";\n'
        f'Dir::Etc::Preferences "{empty}/preferences";\n'
        f'Dir::Etc::PreferencesParts "{empty}";\n'
        f'Dir::State "{root}/state";\n'
        f'Dir::State::Lists "{lists}";\n'
        f'Dir::Cache "{root}/cache";\n'
        f'Dir::Log "{root}/log";\n'
        'Acquire::Languages "none";\n'
        # pytest's temporary directories are 0700: the _apt user could not read them
        'APT::Sandbox::User "root";\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APT_CONFIG", str(config))
        yield LocalApt(repo=repo, sources=sources, lists=lists)


@pytest.fixture
def dummy_absent(local_apt: LocalApt) -> Iterator[LocalApt]:
    _purge()
    assert pkg.installed_version(PACKAGE) is None
    yield local_apt
    _purge()
    assert pkg.installed_version(PACKAGE) is None
    assert "installed" not in dpkg_status(PACKAGE).split(" ")
    assert not VERSION_FILE.parent.exists()


def test_apt_sees_only_the_local_repository(local_apt: LocalApt) -> None:
    assert local_apt.sources.read_text() == f"deb [trusted=yes] file:{local_apt.repo} ./\n"
    proc = subprocess.run(
        ["apt-get", "-q", "--print-uris", "update"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    uris = re.findall(r"^'([^']+)'", proc.stdout, re.MULTILINE)
    assert uris, proc.stdout
    assert [u for u in uris if not u.startswith(f"file:{local_apt.repo}/")] == []


def test_installed_installs_once(dummy_absent: LocalApt) -> None:
    would = pkg.installed(make_ctx(test=True), PACKAGE)
    assert would.result is None
    assert would.changes == {PACKAGE: {"old": "", "new": "latest"}}
    assert would.comment == f"would install {PACKAGE}"
    assert pkg.installed_version(PACKAGE) is None
    assert not VERSION_FILE.exists()

    result = pkg.installed(make_ctx(), PACKAGE)
    assert result.result is True, result.comment
    assert result.changes == {PACKAGE: {"old": "", "new": "1.1"}}
    assert result.comment == f"installed {PACKAGE} 1.1"
    assert dpkg_status(PACKAGE) == "install ok installed 1.1"
    assert shipped_version() == "1.1"
    # the index apt-get read (refreshed by pkg.py when it did not know the package) is
    # the local repository's, in the throwaway lists: nothing else was fetched
    indexes = [p.name for p in dummy_absent.lists.iterdir() if p.is_file() and p.name != "lock"]
    assert indexes == [str(dummy_absent.repo).replace("/", "_") + "_._Packages"]

    again = pkg.installed(make_ctx(), PACKAGE)
    assert again.result is True and again.changes == {}
    assert again.comment == f"package {PACKAGE} 1.1 is already installed"
    pinned = pkg.installed(make_ctx(), PACKAGE, version="1.1")
    assert pinned.result is True and pinned.changes == {}
    assert pinned.comment == f"package {PACKAGE} 1.1 is already installed"


@pytest.mark.usefixtures("dummy_absent")
def test_installed_pins_upgrades_and_downgrades_a_version() -> None:
    pinned = pkg.installed(make_ctx(), PACKAGE, version="1.0")
    assert pinned.result is True, pinned.comment
    assert pinned.changes == {PACKAGE: {"old": "", "new": "1.0"}}
    assert shipped_version() == "1.0"
    # no version asked: what is installed stays, though 1.1 is available
    kept = pkg.installed(make_ctx(), PACKAGE)
    assert kept.result is True and kept.changes == {}
    assert kept.comment == f"package {PACKAGE} 1.0 is already installed"

    would = pkg.installed(make_ctx(test=True), PACKAGE, version="1.1")
    assert would.result is None
    assert would.changes == {PACKAGE: {"old": "1.0", "new": "1.1"}}
    assert would.comment == f"would change 1.0 to {PACKAGE}=1.1"
    assert pkg.installed_version(PACKAGE) == "1.0"

    up = pkg.installed(make_ctx(), PACKAGE, version="1.1")
    assert up.result is True, up.comment
    assert up.changes == {PACKAGE: {"old": "1.0", "new": "1.1"}}
    assert shipped_version() == "1.1"
    down = pkg.installed(make_ctx(), PACKAGE, version="1.0")
    assert down.result is True, down.comment
    assert down.changes == {PACKAGE: {"old": "1.1", "new": "1.0"}}
    assert dpkg_status(PACKAGE) == "install ok installed 1.0"
    assert shipped_version() == "1.0"


@pytest.mark.usefixtures("dummy_absent")
def test_unknown_package_or_version_fails() -> None:
    missing = pkg.installed(make_ctx(), "saline-no-such-package-xyz")
    assert missing.result is False
    assert "Unable to locate package saline-no-such-package-xyz" in missing.comment
    bad = pkg.installed(make_ctx(), PACKAGE, version="0.0-nope")
    assert bad.result is False
    assert f"Version '0.0-nope' for '{PACKAGE}' was not found" in bad.comment
    assert bad.changes == {}
    assert pkg.installed_version(PACKAGE) is None


def test_invalid_names_are_refused_before_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"ran {args[0] if args else kwargs}")

    monkeypatch.setattr(pkg.subprocess, "run", no_subprocess)
    for name, version in (("-y", None), ("Hello World", None), (PACKAGE, "1.0; rm -rf /")):
        result = pkg.installed(make_ctx(), name, version=version)
        assert result.result is False and "invalid" in result.comment
