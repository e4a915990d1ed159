"""The state module registry, the shared contract of every function, and test.*."""

import inspect
from typing import Any

import pytest

from saline.errors import StateError
from states.modules import REGISTRY, test
from states.modules.base import StateContext, StateResult


class NoFiles:
    def get(self, url: str) -> bytes:
        raise StateError(f"no file server in this test: {url}")


def no_call(fun: str, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"test states must not call execution functions ({fun})")


def make_ctx(test: bool = False) -> StateContext:
    return StateContext(
        minion_id="be1", grains={}, pillar={}, test=test, call=no_call, files=NoFiles()
    )


def test_registry_lists_every_module() -> None:
    assert sorted(REGISTRY) == ["cmd", "file", "group", "pkg", "service", "test", "user"]
    assert sorted(REGISTRY["file"]) == [
        "absent",
        "directory",
        "exists",
        "keyvalue",
        "line",
        "managed",
        "symlink",
    ]
    assert "mod_watch" in REGISTRY["service"] and "mod_watch" in REGISTRY["cmd"]
    assert "mod_watch" not in REGISTRY["file"]


@pytest.mark.parametrize("module,function", [(m, f) for m, fns in REGISTRY.items() for f in fns])
def test_every_function_follows_the_contract(module: str, function: str) -> None:
    fn = REGISTRY[module][function]
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params[:2]] == ["ctx", "name"], f"{module}.{function}"
    assert inspect.signature(fn).return_annotation in (StateResult, "StateResult")
    assert fn.__doc__ and fn.__doc__.strip(), f"{module}.{function} needs a docstring"


def test_test_module_outcomes() -> None:
    ctx = make_ctx()
    assert test.succeed_without_changes(ctx, "x") == StateResult(
        result=True, comment="succeeded without changes"
    )
    failed = test.fail_without_changes(ctx, "x", anything="ignored")
    assert failed.result is False and failed.changes == {}
    changed = test.succeed_with_changes(ctx, "x")
    assert changed.result is True and changed.changes == test.PRETEND_CHANGES
    assert test.fail_with_changes(ctx, "x").result is False
    nop = test.nop(ctx, "x")
    assert nop.result is True and nop.changes == {} and "nothing to do" in nop.comment
    assert test.mod_watch(ctx, "x").changes == {"watched": True}


def test_test_module_in_test_mode() -> None:
    ctx = make_ctx(test=True)
    assert test.succeed_with_changes(ctx, "x").result is None
    assert test.fail_with_changes(ctx, "x").result is None
    assert test.mod_watch(ctx, "x").result is None
    assert test.succeed_without_changes(ctx, "x").result is True
    assert test.fail_without_changes(ctx, "x").result is False
