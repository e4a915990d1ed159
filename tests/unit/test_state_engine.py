"""Tests for the state engine: loading, validation, ordering and running of chunks.

State functions here are a tiny fake registry ("t" and "u"); the real state modules are
tested on their own. Requisite semantics live in golden case files under
``tests/cases/engine/`` (files in, calls and results out).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.errors import StateError
from states.engine import compile_states, run, show
from states.model import Chunk, ChunkResult, RequisiteKind
from states.modules.base import StateContext, StateFunction, StateResult

CASES = Path(__file__).parent.parent / "cases" / "engine"


class Files:
    """In-memory FileSource: ``path -> text`` relative to ``saline://``; logs requests."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = {f"saline://{path}": text.encode() for path, text in files.items()}
        self.requests: list[str] = []

    def get(self, url: str) -> bytes:
        self.requests.append(url)
        try:
            return self.files[url]
        except KeyError:
            raise StateError(f"{url}: no such file") from None


class Calls:
    """A fake ``ctx.call`` (for ``saline[...]`` in templates) that logs what it ran."""

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, fun: str, *args: Any, **kwargs: Any) -> Any:
        self.log.append((fun, args))
        if fun == "test.echo":
            return args[0]
        raise StateError(f"{fun}: not available")


def make_registry(log: list[str]) -> dict[str, dict[str, StateFunction]]:
    """Fake state modules; every call appends ``function:name[:test]`` to ``log``."""

    def record(ctx: StateContext, function: str, name: str) -> None:
        log.append(f"{function}:{name}" + (":test" if ctx.test else ""))

    def ok(ctx: StateContext, name: str, mode: str = "0644") -> StateResult:
        record(ctx, "ok", name)
        return StateResult(result=True, comment="ok")

    def change(ctx: StateContext, name: str, value: Any = "new") -> StateResult:
        record(ctx, "change", name)
        changes = {"value": {"old": None, "new": value}}
        if ctx.test:
            return StateResult(result=None, changes=changes, comment="would change")
        return StateResult(result=True, changes=changes, comment="changed")

    def fail(ctx: StateContext, name: str) -> StateResult:
        record(ctx, "fail", name)
        return StateResult(result=False, comment="failed")

    def boom(ctx: StateContext, name: str) -> StateResult:
        record(ctx, "boom", name)
        raise RuntimeError(f"boom in {name}")

    def need(ctx: StateContext, name: str, path: str, *, owner: str = "root") -> StateResult:
        record(ctx, "need", name)
        return StateResult(result=True, comment=f"{path} owned by {owner}")

    def echo(ctx: StateContext, name: str, text: str) -> StateResult:
        record(ctx, "echo", name)
        return StateResult(
            result=True, changes={"text": {"new": text}, text: [text, 1]}, comment=text
        )

    def nap(ctx: StateContext, name: str) -> StateResult:
        time.sleep(0.02)
        return StateResult(result=True, comment="rested")

    def wrong(ctx: StateContext, name: str) -> StateResult:
        return {"result": True}  # type: ignore[return-value]

    def mod_watch(ctx: StateContext, name: str, sfun: str = "", **kwargs: Any) -> StateResult:
        record(ctx, "mod_watch", name)
        if ctx.test:
            return StateResult(result=None, changes={"restarted": True}, comment="would restart")
        return StateResult(
            result=True, changes={"restarted": True}, comment=f"restarted after {sfun}"
        )

    def u_ok(ctx: StateContext, name: str) -> StateResult:
        record(ctx, "u_ok", name)
        return StateResult(result=True, comment="u ok")

    t: dict[str, StateFunction] = {
        "ok": ok,
        "change": change,
        "fail": fail,
        "boom": boom,
        "need": need,
        "echo": echo,
        "nap": nap,
        "wrong": wrong,
        "mod_watch": mod_watch,
    }
    return {"t": t, "u": {"ok": u_ok}}


def compile_tree(
    files: dict[str, str],
    names: Sequence[str] | None = ("main",),
    *,
    minion_id: str = "m1",
    grains: dict[str, Any] | None = None,
    pillar: dict[str, Any] | None = None,
    call: Calls | None = None,
    source: Files | None = None,
) -> list[Chunk]:
    return compile_states(
        names,
        files=source or Files(files),
        minion_id=minion_id,
        grains=grains or {},
        pillar=pillar or {},
        call=call or Calls(),
        registry=make_registry([]),
    )


def apply(
    files: dict[str, str],
    *,
    test: bool = False,
    failhard: bool = False,
    secrets: frozenset[str] = frozenset(),
    log: list[str] | None = None,
) -> dict[str, ChunkResult]:
    """Compile ``main`` and run it; results by key, in run order."""
    log = [] if log is None else log
    source = Files(files)
    registry = make_registry(log)
    chunks = compile_states(
        ["main"],
        files=source,
        minion_id="m1",
        grains={},
        pillar={},
        call=Calls(),
        registry=registry,
    )
    ctx = StateContext(
        minion_id="m1",
        grains={},
        pillar={},
        test=test,
        call=Calls(),
        files=source,
        secrets=secrets,
    )
    return {r.key: r for r in run(chunks, ctx, registry, failhard=failhard)}


def error_of(files: dict[str, str], names: Sequence[str] | None = ("main",), **kwargs: Any) -> str:
    with pytest.raises(StateError) as info:
        compile_tree(files, names, **kwargs)
    return str(info.value)


# --- golden cases: requisite semantics ----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_golden_case(case: Path) -> None:
    spec = yaml.safe_load(case.read_text())
    log: list[str] = []
    results = apply(
        spec["files"], test=spec.get("test", False), failhard=spec.get("failhard", False), log=log
    )
    assert log == spec["calls"]
    assert list(results) == list(spec["expect"]), "run order"
    for key, want in spec["expect"].items():
        got = results[key]
        assert (got.result, got.comment) == (want["result"], want["comment"]), key
        assert bool(got.changes) == want.get("changed", False), key


def test_golden_cases_exist() -> None:
    assert len(list(CASES.glob("*.yaml"))) >= 10


# --- loading: shapes, includes, ids -------------------------------------------------------------


def test_list_and_mapping_shapes_compile_alike() -> None:
    as_list = """
/etc/x:
  t.need:
    - path: /etc/x
    - owner: chef
    - require:
      - t: base
base:
  t.ok: []
"""
    as_mapping = """
/etc/x:
  t.need:
    path: /etc/x
    owner: chef
    require:
      - t: base
base:
  t.ok:
"""
    first, second = compile_tree({"main.yaml": as_list}), compile_tree({"main.yaml": as_mapping})
    assert [c.key for c in first] == ["t.ok:base", "t.need:/etc/x"]
    assert [c.model_dump(exclude={"requisites", "line"}) for c in first] == [
        c.model_dump(exclude={"requisites", "line"}) for c in second
    ]
    need = first[1]
    assert need.kwargs == {"path": "/etc/x", "owner": "chef"}
    assert need.name == "/etc/x" and need.require == ["t.ok:base"]
    assert need.requisites[0].kind is RequisiteKind.REQUIRE and need.requisites[0].line == 7


def test_name_overrides_id_and_requisite_matches_name() -> None:
    chunks = compile_tree(
        {
            "main.yaml": """
svc:
  t.ok:
    - name: etcd
after:
  t.ok:
    - require:
      - t: etcd
"""
        }
    )
    assert chunks[0].name == "etcd" and chunks[0].id == "svc"
    assert chunks[1].require == ["t.ok:svc"]


def test_several_modules_under_one_id_but_one_function_per_module() -> None:
    chunks = compile_tree({"main.yaml": "x:\n  t.ok: []\n  u.ok: []\n"})
    assert [c.key for c in chunks] == ["t.ok:x", "u.ok:x"]
    message = error_of({"main.yaml": "x:\n  t.ok: []\n  t.change: []\n"})
    assert message.startswith("main.yaml:3: x: t.change: t.ok is already declared")


def test_init_layout_and_include_order() -> None:
    files = {
        "app/init.yaml": "include:\n  - .conf\n  - common\napp:\n  t.ok: []\n",
        "app/conf.yaml": "conf:\n  t.ok: []\n",
        "common.yaml": "common:\n  t.ok: []\n",
    }
    chunks = compile_tree(files, ["app"])
    assert [c.id for c in chunks] == ["conf", "common", "app"]
    assert [(c.sls, c.file) for c in chunks] == [
        ("app.conf", "app/conf.yaml"),
        ("common", "common.yaml"),
        ("app", "app/init.yaml"),
    ]


def test_relative_include_from_plain_file_is_a_sibling() -> None:
    files = {
        "app/main.yaml": "include:\n  - .conf\nmain:\n  t.ok: []\n",
        "app/conf.yaml": "conf:\n  t.ok: []\n",
    }
    assert [c.sls for c in compile_tree(files, ["app.main"])] == ["app.conf", "app.main"]


def test_include_cycle_loads_each_file_once() -> None:
    source = Files(
        {
            "main.yaml": "include:\n  - other\nmain:\n  t.ok: []\n",
            "other.yaml": "include:\n  - main\nother:\n  t.ok: []\n",
        }
    )
    chunks = compile_tree({}, ["main", "other", "main"], source=source)
    assert [c.id for c in chunks] == ["other", "main"]
    assert sorted(source.requests) == ["saline://main.yaml", "saline://other.yaml"]


def test_missing_state_names_both_layouts() -> None:
    message = error_of({}, ["chef_backend.secrets"])
    assert "saline://chef_backend/secrets.yaml" in message
    assert "saline://chef_backend/secrets/init.yaml" in message


def test_missing_include_names_the_including_file_and_line() -> None:
    message = error_of({"main.yaml": "include:\n  - base\n  - nope\n", "base.yaml": ""})
    assert message.startswith("main.yaml:3: include 'nope': neither saline://nope.yaml")


def test_bad_state_name_is_refused_before_any_lookup() -> None:
    source = Files({})
    with pytest.raises(StateError, match="not a valid state name"):
        compile_tree({}, ["../etc/passwd"], source=source)
    assert source.requests == []


def test_duplicate_id_across_files_names_both() -> None:
    files = {
        "main.yaml": "include:\n  - other\n\nx:\n  t.ok: []\n",
        "other.yaml": "x:\n  u.ok: []\n",
    }
    message = error_of(files)
    assert message == "main.yaml:5: duplicate id 'x' (also declared at other.yaml:2)"


def test_duplicate_key_in_one_file_is_an_error() -> None:
    message = error_of({"main.yaml": "x:\n  t.ok: []\ny:\n  t.ok: []\nx:\n  t.ok: []\n"})
    assert message == "main.yaml:5: duplicate key 'x' (first at line 1)"


def test_empty_state_file_has_no_chunks() -> None:
    assert compile_tree({"main.yaml": "# nothing yet\n"}) == []


# --- highstate: top.yaml --------------------------------------------------------------------------

TOP = """
base:
  '*':
    - common
  'G@role:backend':
    - backend
    - common
  'fe* and G@os:Debian':
    - frontend
"""
TREE = {
    "top.yaml": TOP,
    "common.yaml": "common:\n  t.ok: []\n",
    "backend.yaml": "backend:\n  t.ok: []\n",
    "frontend.yaml": "frontend:\n  t.ok: []\n",
}


@pytest.mark.parametrize(
    ("minion_id", "grains", "ids"),
    [
        ("be1", {"role": "backend"}, ["common", "backend"]),
        ("fe1", {"os": "Debian"}, ["common", "frontend"]),
        ("fe2", {"os": "RedHat"}, ["common"]),
    ],
)
def test_top_file_targets_by_id_grain_and_compound(
    minion_id: str, grains: dict[str, Any], ids: list[str]
) -> None:
    chunks = compile_tree(TREE, None, minion_id=minion_id, grains=grains)
    assert [c.id for c in chunks] == ids


def test_top_file_without_base_and_matching_nothing_is_empty() -> None:
    files = {"top.yaml": "'db*':\n  - common\n", "common.yaml": "common:\n  t.ok: []\n"}
    assert compile_tree(files, None, minion_id="web1") == []
    assert compile_tree({"top.yaml": ""}, None) == []


def test_top_file_errors_name_the_line() -> None:
    assert error_of({"top.yaml": "'*':\n  - a\n'G@':\n  - b\n"}, None).startswith(
        "top.yaml:3: target 'G@':"
    )
    assert error_of({"top.yaml": "'*': common\n"}, None).startswith(
        "top.yaml:1: target '*': expected a list"
    )
    assert "saline://top.yaml" in error_of({}, None)


# --- rendering ------------------------------------------------------------------------------------


def test_jinja_sees_grains_pillar_minion_id_and_execution_functions() -> None:
    calls = Calls()
    text = """
{% for user in pillar.users %}
user-{{ user }}:
  t.need:
    - path: /home/{{ user }}
    - owner: {{ saline['test.echo'](grains.os) }}-{{ minion_id }}
{% endfor %}
"""
    chunks = compile_tree(
        {"main.yaml": text},
        minion_id="be1",
        grains={"os": "debian"},
        pillar={"users": ["ann", "bob"]},
        call=calls,
    )
    assert [(c.id, c.kwargs["owner"]) for c in chunks] == [
        ("user-ann", "debian-be1"),
        ("user-bob", "debian-be1"),
    ]
    assert calls.log == [("test.echo", ("debian",)), ("test.echo", ("debian",))]


def test_undefined_in_template_names_the_file() -> None:
    message = error_of({"app/init.yaml": "x:\n  t.need:\n    - path: {{ pillar.nope }}\n"}, ["app"])
    assert message.startswith("app/init.yaml:3: undefined in template:")
    assert "nope" in message


def test_failing_execution_function_in_template_names_the_file() -> None:
    message = error_of({"main.yaml": "{{ saline['cmd.run']('id') }}\n"})
    assert message.startswith("main.yaml: saline['cmd.run'] failed:")


def test_yaml_error_names_file_and_line() -> None:
    message = error_of({"main.yaml": "a:\n  t.ok: []\nb:\n  t.ok: [\n"})
    assert message.startswith("main.yaml:5: invalid YAML:")


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x:\n  nope.ok: []\n", "main.yaml:2: x: nope.ok: unknown state module 'nope'"),
        ("x:\n  t.okk: []\n", "main.yaml:2: x: t.okk: unknown function 'okk'"),
        ("x:\n  t.ok:\n    - mdoe: 1\n", "main.yaml:3: x: t.ok: unknown argument 'mdoe' (did"),
        ("x:\n  t.ok:\n    mdoe: 1\n", "main.yaml:3: x: t.ok: unknown argument 'mdoe' (did"),
        ("x:\n  t.need:\n    owner: a\n", "main.yaml:2: x: t.need: missing required argument"),
        ("x:\n  managed: []\n", "main.yaml:2: x: 'managed': expected module.function"),
        ("x:\n  t.ok: [a]\n", "main.yaml:2: x: t.ok: expected '- argument: value'"),
        ("x:\n  t.ok:\n  - mode: 1\n  - mode: 2\n", "main.yaml:4: x: t.ok: argument 'mode' given"),
        ("x:\n  t.ok:\n    name: 5\n", "main.yaml:3: x: t.ok: name must be a non-empty string"),
        ("x:\n  t.ok:\n    failhard: yes please\n", "main.yaml:3: x: t.ok: failhard must be"),
        ("x:\n  t.ok:\n    require: t\n", "main.yaml:3: x: t.ok: require: expected a list"),
        ("x:\n  t.ok:\n    watch:\n      - t\n", "main.yaml:4: x: t.ok: watch: expected a list"),
        ("x: 3\n", "main.yaml:1: x: expected a mapping of module.function"),
        ("- x\n", "main.yaml:1: a state file must map ids to states"),
        ("include: base\n", "main.yaml:1: include: expected a list of state names"),
    ],
)
def test_validation_errors_name_file_line_and_field(text: str, expected: str) -> None:
    assert error_of({"main.yaml": text}).startswith(expected)


def test_unknown_argument_suggests_the_close_one() -> None:
    assert "did you mean 'mode'?" in error_of({"main.yaml": "x:\n  t.ok:\n    - mdoe: 1\n"})


def test_secret_values_never_appear_in_errors() -> None:
    message = error_of({"main.yaml": "x:\n  t.ok:\n    - s3cr3t-value\n"})
    assert "s3cr3t" not in message


# --- ordering errors ------------------------------------------------------------------------------


def test_missing_requisite_target_names_file_and_line() -> None:
    text = "a:\n  t.ok: []\nb:\n  t.ok:\n    - require:\n      - t: a\n      - u: a\n"
    assert error_of({"main.yaml": text}) == (
        "main.yaml:7: b: t.ok: require: no state u:a (by id or name)"
    )
    text_in = "a:\n  t.ok:\n    - watch_in:\n      - t: ghost\n"
    assert error_of({"main.yaml": text_in}).startswith(
        "main.yaml:4: a: t.ok: watch_in: no state t:ghost"
    )


def test_cycle_names_the_states_in_it() -> None:
    text = """
free:
  t.ok: []
a:
  t.ok:
    - require:
      - t: c
b:
  t.ok:
    - watch:
      - t: a
c:
  t.ok:
    - onchanges:
      - t: b
"""
    message = error_of({"main.yaml": text})
    assert message.startswith("requisite cycle: t:a (main.yaml:5) -> t:c (main.yaml:13)")
    assert "t:b (main.yaml:9)" in message and "free" not in message


def test_in_form_can_close_a_cycle_too() -> None:
    text = "a:\n  t.ok:\n    require_in: {t: b}\nb:\n  t.ok:\n    require_in: {t: a}\n"
    assert error_of({"main.yaml": text}).startswith("requisite cycle: t:a")


def test_order_is_stable_among_independent_states() -> None:
    ids = [f"s{i:02d}" for i in range(30)]
    text = "".join(f"{i}:\n  t.ok: []\n" for i in reversed(ids))
    text += "late:\n  t.ok:\n    - require_in:\n      - t: s29\n"
    chunks = compile_tree({"main.yaml": text})
    # s29 is declared first but waits for "late"; all the others keep declaration order
    assert [c.id for c in chunks] == [*reversed(ids[:-1]), "late", "s29"]
    assert [c.order for c in chunks] == list(range(len(chunks)))


# --- running --------------------------------------------------------------------------------------


def test_exception_in_a_state_fails_only_that_state() -> None:
    results = apply({"main.yaml": "a:\n  t.boom: []\nb:\n  t.ok: []\n"})
    assert results["t.boom:a"].result is False
    assert results["t.boom:a"].comment == "t.boom raised RuntimeError: boom in a"
    assert results["t.ok:b"].result is True


def test_non_result_return_fails_the_state() -> None:
    results = apply({"main.yaml": "a:\n  t.wrong: []\n"})
    assert results["t.wrong:a"].result is False
    assert results["t.wrong:a"].comment == "t.wrong returned dict, not StateResult"


def test_secrets_are_masked_in_comments_and_changes() -> None:
    text = (
        "pw:\n  t.echo:\n    - name: user-hunter2-x\n    - text: 'pw=hunter2 long=hunter2hunter2'\n"
    )
    result = apply({"main.yaml": text}, secrets=frozenset({"hunter2", "hunter2hunter2", ""}))[
        "t.echo:pw"
    ]
    dumped = json.dumps(result.model_dump())
    assert "hunter2" not in dumped
    assert result.comment == "pw=*** long=***"
    assert result.name == "user-***-x"
    assert result.changes == {
        "text": {"new": "pw=*** long=***"},
        "pw=*** long=***": ["pw=*** long=***", 1],
    }


def test_result_fields_and_duration() -> None:
    results = apply({"main.yaml": "a:\n  t.nap: []\n"})
    result = results["t.nap:a"]
    assert (result.id, result.state, result.name, result.sls) == ("a", "t.nap", "a", "main")
    assert result.duration_ms >= 20


def test_mod_watch_gets_the_chunk_arguments_it_accepts() -> None:
    log: list[str] = []
    text = "c:\n  t.change: []\ns:\n  t.ok:\n    - mode: '0600'\n    - watch:\n      - t: c\n"
    result = apply({"main.yaml": text}, log=log)["t.ok:s"]
    assert log == ["change:c", "ok:s", "mod_watch:s"]
    assert result.changes == {"restarted": True}


def test_failing_function_skips_mod_watch() -> None:
    log: list[str] = []
    text = "c:\n  t.change: []\ns:\n  t.fail:\n    - watch:\n      - t: c\n"
    result = apply({"main.yaml": text}, log=log)["t.fail:s"]
    assert log == ["change:c", "fail:s"]
    assert (result.result, result.comment) == (False, "failed")


def test_show_is_plain_json_data_in_run_order() -> None:
    text = "b:\n  t.ok:\n    - require:\n      - t: a\na:\n  t.change:\n    value: [1, 2]\n"
    data = show(compile_tree({"main.yaml": text}))
    assert json.loads(json.dumps(data)) == data
    assert [(d["id"], d["order"]) for d in data] == [("a", 0), ("b", 1)]
    assert data[0]["kwargs"] == {"value": [1, 2]}
    assert data[1]["require"] == ["t.change:a"]
    assert data[1]["requisites"] == [
        {"kind": "require", "module": "t", "target": "a", "reverse": False, "line": 4}
    ]


def test_mod_watch_is_skipped_when_the_state_itself_changed_something() -> None:
    """SaltStack's rule: the state's own call made changes (started a stopped service,
    ran a command), so the watch would only do the same thing twice."""
    log: list[str] = []
    text = "c:\n  t.change: []\ns:\n  t.change:\n    - watch:\n      - t: c\n"
    result = apply({"main.yaml": text}, log=log)["t.change:s"]
    assert log == ["change:c", "change:s"]
    assert "restarted" not in result.changes


def test_mod_watch_is_skipped_in_test_mode_when_the_state_would_change() -> None:
    log: list[str] = []
    text = "c:\n  t.change: []\ns:\n  t.change:\n    - watch:\n      - t: c\n"
    result = apply({"main.yaml": text}, log=log, test=True)["t.change:s"]
    assert log.count("mod_watch:s") == 0
    assert result.comment.count(";") == 0  # one story, not two joined
