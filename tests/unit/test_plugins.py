"""Plugins through entry points: real distributions on sys.path, found by importlib.metadata."""

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minion.beacons.registry import BEACONS
from minion.modules import MODULES
from minion.plugins import PluginError, load_beacons, load_modules
from saline.errors import SalineError

BEACON_SOURCE = textwrap.dedent(
    """
    from minion.beacons.base import Beacon, BeaconConfig, Observation

    class PingConfig(BeaconConfig):
        target: str

    class PingBeacon(Beacon):
        name = "ping"
        Config = PingConfig

        def check(self):
            return [Observation("ping", "ok", False)]

    NOT_A_BEACON = 42

    FUNCTIONS = {"hello": lambda ctx: "hi"}
    """
)


def install(
    site: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str, source: str = BEACON_SOURCE
) -> str:
    """Write a distribution (module + dist-info) into ``site`` and put it on sys.path.

    ``entry_points`` may refer to the module as ``{mod}``. :returns: the module name.
    """
    mod = f"plug_{uuid.uuid4().hex[:12]}"  # fresh each time: no stale sys.modules entry
    (site / f"{mod}.py").write_text(source)
    info = site / "saline_plug-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: saline-plug\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).format(mod=mod))
    monkeypatch.syspath_prepend(str(site))
    return mod


def test_without_plugins_the_builtins_are_returned() -> None:
    assert load_beacons() == BEACONS
    assert load_modules() == MODULES


def test_good_plugins_are_added_to_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = install(
        tmp_path,
        monkeypatch,
        """
        [saline.beacons]
        ping = {mod}:PingBeacon
        [saline.modules]
        greet = {mod}
        """,
    )
    beacons = load_beacons()
    assert set(beacons) == {*BEACONS, "ping"}
    assert beacons["ping"].__module__ == mod
    assert beacons["ping"].Config.model_validate({"target": "x"}).model_dump() == {"target": "x"}
    modules = load_modules()
    assert set(modules) == {*MODULES, "greet"}
    assert modules["greet"].FUNCTIONS["hello"](None) == "hi"


def test_import_failure_names_distribution_and_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(
        tmp_path,
        monkeypatch,
        "[saline.beacons]\nping = {mod}:PingBeacon\n",
        source="import no_such_dependency_xyz\n",
    )
    with pytest.raises(PluginError) as info:
        load_beacons()
    message = str(info.value)
    assert "plugin saline-plug 1.2, entry point saline.beacons:ping" in message
    assert "import failed: ModuleNotFoundError" in message
    assert "no_such_dependency_xyz" in message
    assert isinstance(info.value, SalineError)


def test_missing_attribute_is_an_import_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, monkeypatch, "[saline.beacons]\nping = {mod}:Nope\n")
    with pytest.raises(PluginError, match=r"saline.beacons:ping .*import failed: AttributeError"):
        load_beacons()


@pytest.mark.parametrize(
    ("entry_points", "loader", "message"),
    [
        ("[saline.beacons]\nping = {mod}:NOT_A_BEACON\n", load_beacons, "expected a subclass"),
        ("[saline.beacons]\nping = {mod}:PingConfig\n", load_beacons, "expected a subclass"),
        ("[saline.modules]\ngreet = {mod}:PingBeacon\n", load_modules, "expected a module"),
    ],
)
def test_wrong_type(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry_points: str,
    loader: Callable[[], dict[str, Any]],
    message: str,
) -> None:
    install(tmp_path, monkeypatch, entry_points)
    with pytest.raises(PluginError, match=rf"^plugin saline-plug 1\.2, .*: {message}"):
        loader()


def test_module_without_functions_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, monkeypatch, "[saline.modules]\ngreet = {mod}\n", source="X = 1\n")
    with pytest.raises(PluginError, match="has no FUNCTIONS dict"):
        load_modules()


@pytest.mark.parametrize(
    ("entry_points", "loader", "name"),
    [
        ("[saline.beacons]\nservice = {mod}:PingBeacon\n", load_beacons, "service"),
        ("[saline.modules]\ncmd = {mod}\n", load_modules, "cmd"),
    ],
)
def test_name_collision_with_a_builtin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry_points: str,
    loader: Callable[[], dict[str, Any]],
    name: str,
) -> None:
    install(tmp_path, monkeypatch, entry_points)
    with pytest.raises(PluginError, match=rf"entry point .*:{name} = .*taken by a built-in"):
        loader()


def test_name_collision_between_two_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    install(first, monkeypatch, "[saline.beacons]\nping = {mod}:PingBeacon\n")
    install(second, monkeypatch, "[saline.beacons]\nping = {mod}:PingBeacon\n")
    # the second distribution needs its own name, or importlib.metadata shows only one
    (second / "saline_plug-1.2.dist-info").rename(second / "other_plug-2.0.dist-info")
    (second / "other_plug-2.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: other-plug\nVersion: 2.0\n"
    )
    with pytest.raises(PluginError, match=r"'ping' is taken by plugin ") as info:
        load_beacons()
    message = str(info.value)
    assert "saline-plug 1.2" in message
    assert "other-plug 2.0" in message
    assert message.count("saline.beacons:ping") == 2
