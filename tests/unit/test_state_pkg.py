"""pkg.installed with a real small Debian package (GNU hello) from the Debian mirror.

Needs root and network access to the mirror: a failed install fails the test.
"""

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from saline.errors import StateError
from states.modules import pkg
from states.modules.base import StateContext

PACKAGE = "hello"


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
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", name], capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else ""


def remove(name: str) -> None:
    subprocess.run(
        ["apt-get", "remove", "-y", "-q", name],
        check=True,
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )


@pytest.fixture
def hello_absent() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("pkg states need root")
    if pkg.installed_version(PACKAGE) is not None:
        remove(PACKAGE)
    yield
    remove(PACKAGE)
    assert pkg.installed_version(PACKAGE) is None


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("hello_absent")
def test_installed_installs_hello_once() -> None:
    would = pkg.installed(make_ctx(test=True), PACKAGE)
    assert would.result is None
    assert would.changes == {PACKAGE: {"old": "", "new": "latest"}}
    assert would.comment == "would install hello"
    assert not dpkg_status(PACKAGE).startswith("install ok installed")

    result = pkg.installed(make_ctx(), PACKAGE)
    assert result.result is True, result.comment
    status = dpkg_status(PACKAGE)
    assert status.startswith("install ok installed ")
    version = status.rsplit(" ", 1)[1]
    assert result.changes == {PACKAGE: {"old": "", "new": version}}

    again = pkg.installed(make_ctx(), PACKAGE)
    assert again.result is True and again.changes == {}
    assert again.comment == f"package hello {version} is already installed"
    pinned = pkg.installed(make_ctx(), PACKAGE, version=version)
    assert pinned.result is True and pinned.changes == {}


@pytest.mark.timeout(900)
def test_unknown_package_or_version_fails() -> None:
    missing = pkg.installed(make_ctx(), "saline-no-such-package-xyz")
    assert missing.result is False
    assert "Unable to locate package" in missing.comment
    bad = pkg.installed(make_ctx(), PACKAGE, version="0.0-nope")
    assert bad.result is False and "0.0-nope" in bad.comment
    assert pkg.installed_version(PACKAGE) is None or "0.0-nope" not in dpkg_status(PACKAGE)


def test_invalid_names_are_refused_before_apt() -> None:
    for name, version in (("-y", None), ("Hello World", None), ("hello", "1.0; rm -rf /")):
        result = pkg.installed(make_ctx(), name, version=version)
        assert result.result is False and "invalid" in result.comment
