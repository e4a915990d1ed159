"""Cluster checks (reactors/checks): the registry, plugins, each Chef HA check on a StaticView,
and ``check.NAME(...)`` in rule expressions, at load and at evaluation."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import reactors.checks
from reactors.checks import (
    CHECKS,
    ENTRY_POINT_GROUP,
    CheckError,
    CheckNamespace,
    call_problem,
    load_checks,
    registry,
)
from reactors.checks.chef import (
    clock_spread,
    config_digest_in_minority,
    migration_drift,
    pg_leader,
    pg_leading,
    secrets_mode,
)
from reactors.engine import evaluate
from reactors.expressions import (
    ExpressionError,
    check_condition,
    check_template,
    evaluate_condition,
    render_value,
)
from reactors.model import Event, Verdict
from reactors.rules import RuleError, load_rules
from reactors.state import ReactorState
from reactors.view import ClusterView, StaticView, ViewProxy
from saline.migration_level import (
    MigrationLevel,
    MigrationLevelError,
    compare_levels,
    parse_level,
)

INVENTORY: dict[str, dict[str, Any]] = {
    "be1": {"role": "backend"},
    "be2": {"role": "backend"},
    "be3": {"role": "backend"},
    "fe1": {"role": "frontend"},
    "fe2": {"role": "frontend"},
    "fe3": {"role": "frontend"},
}


def cluster(
    beacon: str, field: str, inventory: dict[str, dict[str, Any]] | None = None, **by_node: Any
) -> StaticView:
    """A view where each named node's latest ``beacon`` observation has ``field`` set."""
    observations = {node: {beacon: {field: value}} for node, value in by_node.items()}
    return StaticView(inventory or INVENTORY, observations=observations)


def levels(inventory: dict[str, dict[str, Any]] | None = None, **by_node: Any) -> StaticView:
    return cluster("migration_level", "level", inventory, **by_node)


def pinned(*frontends: str, value: Any = True) -> dict[str, dict[str, Any]]:
    return {
        **INVENTORY,
        **{fe: {"role": "frontend", "chef_migration_reference": value} for fe in frontends},
    }


# --- the kernel's migration levels ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"major": 3, "minor": 13}, (3, 13)),
        ({"major": "3", "minor": " 13 ", "sha256": "x", "exists": True}, (3, 13)),
        ([4, 0], (4, 0)),
        ((0, 0), (0, 0)),
    ],
)
def test_parse_level(value: Any, expected: tuple[int, int]) -> None:
    level = parse_level(value)
    assert level == expected
    assert (level.major, level.minor) == expected
    assert str(level) == f"{expected[0]}.{expected[1]}"


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ({"major": None, "minor": None, "exists": False}, "major"),
        ({"major": 1, "minor": -1}, "minor"),
        ({"major": True, "minor": 0}, "major"),
        ([1, 1.5], "minor"),
        ([1, 2, 3], "major, minor"),
        ("3.13", "major, minor"),
        (None, "major, minor"),
    ],
)
def test_parse_level_refuses(value: Any, names: str) -> None:
    with pytest.raises(MigrationLevelError, match=names):
        parse_level(value)


def test_compare_levels_orders_major_then_minor() -> None:
    assert compare_levels([3, 9], {"major": 3, "minor": 13}) == -1
    assert compare_levels([4, 0], [3, 13]) == 1
    assert compare_levels({"major": "3", "minor": "13"}, [3, 13]) == 0


def test_the_minion_compares_with_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from minion.modules import chef_server
    from saline import migration_level

    calls: list[tuple[Any, Any]] = []
    real = migration_level.compare_levels

    def spy(a: Any, b: Any) -> int:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(migration_level, "compare_levels", spy)
    assert chef_server.compare_migration_levels({"major": 1, "minor": 2}, {"major": 1, "minor": 3})
    assert calls == [({"major": 1, "minor": 2}, {"major": 1, "minor": 3})]


# --- the registry and plugins ------------------------------------------------------------------


def _plugin_module(monkeypatch: pytest.MonkeyPatch, **attrs: Any) -> str:
    """A module importable by name (no distribution installed), holding ``attrs``."""
    module = types.ModuleType("saline_test_check_plugin")
    for name, value in attrs.items():
        setattr(module, name, value)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def frontends_online(view: ClusterView) -> int:
    return sum(view.online(fe) for fe in view.members("G@role:frontend"))


def test_registry_holds_the_built_in_checks() -> None:
    assert set(CHECKS) == {
        "migration_drift",
        "pg_leader",
        "pg_leading",
        "config_digest_in_minority",
        "secrets_mode",
        "clock_spread",
    }
    assert set(CHECKS) <= set(registry())
    with pytest.raises(TypeError):
        CHECKS["x"] = len  # type: ignore[index]


def test_entry_points_add_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _plugin_module(monkeypatch, frontends_online=frontends_online)
    table = load_checks([_ep("frontends_online", f"{mod}:frontends_online")])
    assert table["frontends_online"] is frontends_online
    assert table["migration_drift"] is migration_drift
    view = StaticView(INVENTORY, online_ids={"fe1", "be1"})
    assert CheckNamespace(view, table).frontends_online() == 1


def test_no_entry_points_gives_the_built_ins() -> None:
    assert load_checks([]) == dict(CHECKS)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("migration_drift", "{mod}:frontends_online", "'migration_drift' is taken by a built-in"),
        ("x", "{mod}:NOT_A_FUNCTION", "expected a function"),
        ("x", "{mod}:missing", "import failed: AttributeError"),
        ("x", "saline_no_such_module_anywhere:f", "import failed: ModuleNotFoundError"),
        ("not-a-name", "{mod}:frontends_online", "'not-a-name' is not a check name"),
        ("_hidden", "{mod}:frontends_online", "'_hidden' is not a check name"),
    ],
)
def test_a_bad_plugin_fails_loudly_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    mod = _plugin_module(monkeypatch, frontends_online=frontends_online, NOT_A_FUNCTION=3)
    with pytest.raises(CheckError) as caught:
        load_checks([_ep(name, value.format(mod=mod))])
    assert message in str(caught.value)
    assert f"entry point {ENTRY_POINT_GROUP}:{name}" in str(caught.value)
    assert "an unknown distribution" in str(caught.value)


def test_two_plugins_cannot_share_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _plugin_module(monkeypatch, frontends_online=frontends_online)
    twice = [_ep("fo", f"{mod}:frontends_online"), _ep("fo", f"{mod}:frontends_online")]
    with pytest.raises(CheckError, match=r"name 'fo' is taken by plugin .*saline.checks:fo"):
        load_checks(twice)


def test_call_problem_names_the_check_and_its_signature() -> None:
    assert call_problem("migration_drift", 0) is None
    assert call_problem("secrets_mode", 1) is None
    assert call_problem("secrets_mode", 0, ["path"]) is None
    assert call_problem("secrets_mode") is None  # the name only
    unknown = call_problem("migration_drfit", 0)
    assert unknown is not None
    assert "unknown check 'migration_drfit'" in unknown
    assert "migration_drift" in unknown  # the known ones are listed
    too_many = call_problem("pg_leader", 1)
    assert too_many is not None
    assert too_many.startswith("check pg_leader: too many positional arguments")
    missing = call_problem("secrets_mode", 0)
    assert missing is not None
    assert "missing a required argument: 'path'" in missing
    keyword = call_problem("clock_spread", 0, ["group"])
    assert keyword is not None
    assert "unexpected keyword argument 'group'" in keyword


def test_the_namespace_binds_the_view_and_refuses_unknown_names() -> None:
    view = levels(fe1=[3, 13], fe2=[3, 12])
    check = CheckNamespace(view)
    assert check.migration_drift().drifted == ("fe2",)
    with pytest.raises(CheckError, match="unknown check 'nope'"):
        check.nope  # noqa: B018
    with pytest.raises(AttributeError):
        check._view_of_something  # noqa: B018


def test_a_failing_check_raises_a_check_error_naming_it() -> None:
    def boom(view: ClusterView) -> None:
        raise ValueError("no good")

    check = CheckNamespace(levels(), {"boom": boom})
    with pytest.raises(CheckError, match=r"check boom failed: ValueError: no good"):
        check.boom()
    with pytest.raises(CheckError, match=r"check boom failed: TypeError"):
        check.boom(1)


# --- migration_drift ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "reference", "drifted"),
    [
        ({"fe1": [3, 13], "fe2": [3, 12]}, (3, 13), ("fe2",)),
        ({"fe1": [3, 12], "fe2": [4, 0], "fe3": [3, 13]}, (4, 0), ("fe1", "fe3")),
        ({"fe1": [3, 13], "fe2": None}, (3, 13), ("fe2",)),  # a missing file
        ({"fe1": [3, 13], "fe2": [3, "x"]}, (3, 13), ("fe2",)),  # an invalid level: no level
        ({"fe1": [3, 9], "fe2": [3, 13]}, (3, 13), ("fe1",)),  # 13 > 9: numbers, not text
        ({"fe1": [3, 13], "fe2": [3, 13]}, (3, 13), ()),
        ({"fe1": [3, 13]}, (3, 13), ()),  # fe2 and fe3 have not reported: left out
        ({"fe1": None, "fe2": None}, None, ()),  # nothing to copy
        ({}, None, ()),
    ],
)
def test_migration_drift_against_the_highest_level(
    observed: dict[str, Any], reference: tuple[int, int] | None, drifted: tuple[str, ...]
) -> None:
    found = migration_drift(levels(**observed))
    assert found.reference == reference
    assert found.drifted == drifted
    assert found.pinned is False
    assert set(found.levels) == set(observed)


def test_migration_drift_reason_says_what_was_found() -> None:
    found = migration_drift(levels(fe1=[3, 13], fe2=[3, 12], fe3=None))
    assert found.source == "fe1"
    assert found.reason == (
        "reference 3.13 from fe1 (the highest level); fe2 at 3.12, fe3 at no valid level"
    )
    assert migration_drift(levels()).reason == "no frontend reported"


@pytest.mark.parametrize("grain", [True, "true", "True"])
def test_a_configured_reference_wins_over_the_highest_level(grain: Any) -> None:
    found = migration_drift(levels(pinned("fe2", value=grain), fe1=[3, 13], fe2=[3, 12]))
    assert found.reference == (3, 12)
    assert (found.source, found.pinned) == ("fe2", True)
    assert found.drifted == ("fe1",)
    assert "grain chef_migration_reference" in found.reason


def test_a_configured_reference_without_a_level_falls_back_to_the_highest() -> None:
    found = migration_drift(levels(pinned("fe2"), fe1=[3, 13], fe2=None, fe3=[3, 12]))
    assert (found.reference, found.source, found.pinned) == ((3, 13), "fe1", False)
    assert found.drifted == ("fe2", "fe3")


def test_a_reference_set_to_false_is_not_a_reference() -> None:
    found = migration_drift(levels(pinned("fe2", value=False), fe1=[3, 13], fe2=[3, 12]))
    assert found.reference == (3, 13)


def test_migration_drift_is_a_mapping_too() -> None:
    found = migration_drift(levels(fe1=[3, 13], fe2=[3, 12]))
    assert dict(found) == {
        "reference": MigrationLevel(3, 13),
        "source": "fe1",
        "pinned": False,
        "drifted": ("fe2",),
        "levels": {"fe1": (3, 13), "fe2": (3, 12)},
        "reason": found.reason,
    }
    assert found["drifted"] == ("fe2",)
    with pytest.raises(KeyError):
        found["nope"]


# --- the backend checks ----------------------------------------------------------------------


def test_pg_leader_is_the_backend_reporting_the_leader_role() -> None:
    roles = cluster("pg_replication", "role", be1="follower", be2="leader", be3="follower")
    assert pg_leader(roles) == "be2"
    two = cluster("pg_replication", "role", be1="follower", be2="leader", be3="leader")
    assert pg_leader(two) == "be2"  # the first by id
    frontend = cluster("pg_replication", "role", fe1="leader", be1="follower")
    with pytest.raises(CheckError, match="no backend reports the PostgreSQL leader role"):
        pg_leader(frontend)
    with pytest.raises(CheckError):
        pg_leader(cluster("pg_replication", "role"))


def test_pg_leading_lists_the_backends_whose_state_is_leader_now() -> None:
    states = cluster("pg_replication", "state", be1="down", be2="leader", be3="in_sync")
    assert pg_leading(states) == ["be2"]
    assert pg_leading(cluster("pg_replication", "state", be1="down", fe1="leader")) == []
    both = cluster("pg_replication", "state", be3="leader", be1="leader")
    assert pg_leading(both) == ["be1", "be3"]  # a split brain shows as two
    with pytest.raises(CheckError, match="more than one backend says its PostgreSQL leads"):
        pg_leader(both)  # the follower rules escalate rather than heal against either
    failed_over = StaticView(
        INVENTORY,
        observations={
            "be1": {"pg_replication": {"role": "leader", "state": "down"}},  # last seen leading
            "be2": {"pg_replication": {"role": "leader", "state": "leader"}},
        },
    )
    assert pg_leader(failed_over) == "be2"  # the one that leads now, not the first by id


@pytest.mark.parametrize(
    ("digests", "digest", "minority"),
    [
        ({"be1": "a", "be2": "a", "be3": "b"}, "b", True),
        ({"be1": "a", "be2": "a", "be3": "b"}, "a", False),
        ({"be1": "a", "be2": "b"}, "b", False),  # one each: a tie is no minority
        ({"be1": "a", "be2": "b", "be3": "c"}, "c", True),
        ({"be1": "a", "be2": "a", "be3": "b"}, "", False),  # no digest
        ({"be1": "a", "be2": "a", "be3": "b"}, None, False),
        ({"be1": "a", "be2": "a", "fe1": "b", "fe2": "b", "fe3": "b"}, "b", True),  # backends only
        ({}, "a", False),
    ],
)
def test_config_digest_in_minority(digests: dict[str, str], digest: Any, minority: bool) -> None:
    view = cluster("config_drift", "digest", **digests)
    assert config_digest_in_minority(view, digest) is minority


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/etc/chef-backend/secrets.json", "0640"),
        ("/n/be1/etc/chef-backend/secrets.json", "0640"),
        ("/var/opt/chef-backend/leaderl/data/sys.config", "0600"),
        ("/var/opt/chef-backend/PostgreSQL/9.5/recovery.conf", "0600"),
        ("/etc/chef-backend/not-secrets.json", "0600"),
    ],
)
def test_secrets_mode_is_the_reference_table(path: str, mode: str) -> None:
    assert secrets_mode(levels(), path) == mode


def test_secrets_mode_wants_a_path() -> None:
    with pytest.raises(CheckError, match="path must be text"):
        secrets_mode(levels(), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offsets", "spread"),
    [
        ({"be1": 0.0, "be2": -3.0}, 3.0),
        ({"be1": 0.2, "be2": -1.0, "be3": 0.4}, 1.4),
        ({"be1": 5.0}, 0.0),  # one offset: nothing to compare
        ({}, 0.0),
        ({"be1": 0.0, "be2": None, "be3": 2}, 2.0),  # not measured: left out
        ({"be1": 0.0, "fe1": 9.0}, 0.0),  # backends only
    ],
)
def test_clock_spread(offsets: dict[str, Any], spread: float) -> None:
    assert clock_spread(cluster("time_drift", "offset", **offsets)) == pytest.approx(spread)


# --- check.* in rule expressions ---------------------------------------------------------------


def context(view: StaticView, **data: Any) -> dict[str, Any]:
    event = Event(id="e1", tag="saline/beacon/fe2/migration_level/changed", minion="fe2", data=data)
    return {"event": event.context(), "view": ViewProxy(view), "check": CheckNamespace(view)}


def test_conditions_and_templates_call_checks() -> None:
    ctx = context(levels(fe1=[3, 13], fe2=[3, 12]), path="/etc/chef-backend/secrets.json")
    assert evaluate_condition("check.migration_drift().drifted", ctx)
    assert evaluate_condition("event.minion in check.migration_drift().drifted", ctx)
    assert evaluate_condition("check.secrets_mode(event.data.path) == '0640'", ctx)
    assert evaluate_condition("check.secrets_mode(path=event.data.path) == '0640'", ctx)
    assert render_value("{{ check.migration_drift().drifted }}", ctx) == ["fe2"]
    assert render_value("{{ check.migration_drift().reference.major }}", ctx) == 3
    assert render_value("{{ check.migration_drift().reference }}", ctx) == [3, 13]
    whole = render_value("{{ check.migration_drift() }}", ctx)
    assert whole["drifted"] == ["fe2"]
    assert whole["levels"] == {"fe1": [3, 13], "fe2": [3, 12]}
    assert render_value("at {{ check.migration_drift().reference }}", ctx) == "at 3.13"
    assert not evaluate_condition("check.migration_drift().drifted", context(levels()))


def test_checks_keep_the_sandbox_closed() -> None:
    ctx = context(levels(fe1=[3, 13]))
    for source in (
        "check._view",
        "check.migration_drift._fn",
        "check.migration_drift._view",
        "check.migration_drift.__call__.__globals__",
    ):
        with pytest.raises(ExpressionError):
            render_value("{{ " + source + " }}", ctx)


def test_an_undefined_argument_reads_as_the_rules_own_error() -> None:
    with pytest.raises(ExpressionError, match=r"undefined in condition: .*no attribute 'path'"):
        evaluate_condition("check.secrets_mode(event.data.path) == '0600'", context(levels()))


def test_a_check_failing_at_evaluation_is_an_expression_error() -> None:
    ctx = context(levels())  # no backend reports a leader
    with pytest.raises(ExpressionError, match="no backend reports the PostgreSQL leader role"):
        render_value("{{ check.pg_leader() }}", ctx)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("check.migration_drfit().drifted", "unknown check 'migration_drfit'"),
        ("check.nope", "unknown check 'nope'"),
        ("check.pg_leader('be1')", "check pg_leader: too many positional arguments"),
        ("check.secrets_mode()", "check secrets_mode: missing a required argument: 'path'"),
        ("chek.pg_leader()", "unknown name 'chek'"),
    ],
)
def test_unknown_checks_fail_at_load(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        check_condition(source)
    with pytest.raises(ExpressionError, match=message):
        check_template("{{ " + source + " }}")
    with pytest.raises(ExpressionError, match=message):
        check_template("x {{ " + source + " }} y")


def test_known_checks_pass_at_load() -> None:
    check_condition("check.migration_drift().drifted and check.clock_spread() > 1.5")
    check_condition("check.secrets_mode(*['/a']) == '0600'")  # spread arguments: name only
    check_template("{% for fe in check.migration_drift().drifted %}{{ fe }}{% endfor %}")


def _write_rule(tmp_path: Path, when: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        f'- name: watch-frontends\n  on: saline/beacon/*/x/*\n  when: "{when}"\n'
        "  do: [{fire: {tag: x}}]\n"
    )
    return rules


def test_a_rule_calling_an_unknown_check_fails_to_load_naming_both(tmp_path: Path) -> None:
    rules = _write_rule(tmp_path, "check.frontends_online() < 2")
    with pytest.raises(RuleError) as caught:
        load_rules([rules])
    assert str(caught.value).startswith(
        f"{rules / 'r.yaml'}:3: rule 'watch-frontends': when: unknown check 'frontends_online'"
    )


def test_a_plugin_check_drives_a_rule_through_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _plugin_module(monkeypatch, frontends_online=frontends_online)
    table = load_checks([_ep("frontends_online", f"{mod}:frontends_online")])
    monkeypatch.setattr(reactors.checks, "registry", lambda: table)
    [rule] = load_rules([_write_rule(tmp_path, "check.frontends_online() < 2")])
    event = Event(tag="saline/beacon/fe1/x/y", minion="fe1")
    one = StaticView(INVENTORY, online_ids={"fe1"})
    [fired] = evaluate(event, [rule], one, ReactorState(), 0)
    assert fired.verdict is Verdict.FIRE, fired.reason
    every = StaticView(INVENTORY)
    [skipped] = evaluate(event, [rule], every, ReactorState(), 0)
    assert (skipped.verdict, skipped.reason) == (Verdict.SKIP, "condition false")


def test_a_plugin_that_fails_to_load_fails_the_rules_using_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise CheckError("check plugin saline-x 1.0, entry point saline.checks:x: import failed")

    monkeypatch.setattr(reactors.checks, "registry", broken)
    with pytest.raises(RuleError, match=r"rule 'watch-frontends': when: check plugin saline-x"):
        load_rules([_write_rule(tmp_path, "check.migration_drift().drifted")])
