"""pkg.*: Debian packages, read with dpkg-query and installed with apt-get."""

import os
import re
import subprocess
from typing import Any

from saline.errors import StateError
from states.modules.base import StateContext, StateFunction, StateResult

#: Debian policy package names, with an optional ":arch"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9.+~:-]+$")
#: apt's answers that a fresh package index may fix
_STALE_INDEX = re.compile(
    r"Unable to locate package|has no installation candidate|Version '.*' for '.*' was not found"
)
#: seconds an apt-get run may take (downloads on a slow mirror)
APT_TIMEOUT = 900


def installed_version(name: str) -> str | None:
    """The installed version of a package, or None when it is not installed."""
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status} ${Version}\n", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError(f"dpkg-query: {exc}") from exc
    # Exit 1 is "never heard of it"; removed packages may still be listed, as "deinstall
    # ok config-files" for instance: only status "installed" counts ("hold" too).
    for line in proc.stdout.splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4 and fields[2] == "installed":
            return fields[3]
    return None


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt/dpkg run's lock instead of failing at once.
    argv = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=120", *args]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError(f"apt-get {args[0]}: {exc}") from exc


def _install(spec: str) -> None:
    # Keep the node's own config files on upgrade, and never ask.
    args = ["install", "-y", "--allow-downgrades", "-o", "Dpkg::Options::=--force-confdef"]
    args += ["-o", "Dpkg::Options::=--force-confold", spec]
    proc = _apt(args)
    if proc.returncode != 0 and _STALE_INDEX.search(proc.stderr):
        update = _apt(["update"])
        if update.returncode != 0:
            raise StateError(f"apt-get update failed: {_tail(update.stderr)}")
        proc = _apt(args)
    if proc.returncode != 0:
        raise StateError(f"apt-get install {spec} failed: {_tail(proc.stderr or proc.stdout)}")


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def installed(ctx: StateContext, name: str, version: str | None = None) -> StateResult:
    """Ensure a package is installed, at exactly ``version`` when given.

    Installs with ``apt-get install`` (non-interactive, existing config files kept),
    refreshing the package index once when apt does not know the package or version.
    changes: ``{name: {"old": version or "", "new": version}}``.
    """
    if not NAME_PATTERN.match(name):
        return StateResult(result=False, comment=f"invalid package name {name!r}")
    if version is not None and not VERSION_PATTERN.match(str(version)):
        return StateResult(result=False, comment=f"invalid version {version!r} for {name}")
    try:
        old = installed_version(name)
        if old is not None and (version is None or old == str(version)):
            return StateResult(result=True, comment=f"package {name} {old} is already installed")
        spec = name if version is None else f"{name}={version}"
        changes: dict[str, Any] = {name: {"old": old or "", "new": version or "latest"}}
        if ctx.test:
            verb = "install" if old is None else f"change {old} to"
            return StateResult(result=None, changes=changes, comment=f"would {verb} {spec}")
        _install(spec)
        new = installed_version(name)
    except StateError as exc:
        return StateResult(result=False, comment=str(exc))
    if new is None or (version is not None and new != str(version)):
        return StateResult(
            result=False, comment=f"apt-get succeeded but {name} is at {new or 'not installed'}"
        )
    changes[name]["new"] = new
    return StateResult(result=True, changes=changes, comment=f"installed {name} {new}")


FUNCTIONS: dict[str, StateFunction] = {"installed": installed}
