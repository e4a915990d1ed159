"""test.*: states that touch nothing and return a chosen outcome (for trying out trees,
requisites and watches). Extra arguments are accepted and ignored."""

from typing import Any

from states.modules.base import StateContext, StateFunction, StateResult

#: the pretend change of the ``*_with_changes`` functions
PRETEND_CHANGES: dict[str, Any] = {
    "testing": {"old": "Unchanged", "new": "Something pretended to change"}
}


def succeed_without_changes(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """Succeed, with no changes."""
    return StateResult(result=True, comment="succeeded without changes")


def fail_without_changes(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """Fail, with no changes (also in test mode)."""
    return StateResult(result=False, comment="failed without changes, as asked")


def succeed_with_changes(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """Succeed with a pretend change (result None in test mode, like any would-be change)."""
    if ctx.test:
        return StateResult(result=None, changes=PRETEND_CHANGES, comment="would change")
    return StateResult(result=True, changes=PRETEND_CHANGES, comment="succeeded with changes")


def fail_with_changes(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """Fail with a pretend change (result None in test mode)."""
    if ctx.test:
        return StateResult(result=None, changes=PRETEND_CHANGES, comment="would change")
    return StateResult(result=False, changes=PRETEND_CHANGES, comment="failed with changes")


def nop(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """Do nothing and succeed: a placeholder to hang requisites on."""
    return StateResult(result=True, comment="nop: nothing to do")


def mod_watch(ctx: StateContext, name: str, **kwargs: Any) -> StateResult:
    """A watched state changed: report it as a change (result None in test mode)."""
    changes = {"watched": True}
    if ctx.test:
        return StateResult(result=None, changes=changes, comment="would fire the watch")
    return StateResult(result=True, changes=changes, comment="watch fired")


FUNCTIONS: dict[str, StateFunction] = {
    "succeed_without_changes": succeed_without_changes,
    "fail_without_changes": fail_without_changes,
    "succeed_with_changes": succeed_with_changes,
    "fail_with_changes": fail_with_changes,
    "nop": nop,
    "mod_watch": mod_watch,
}
