"""The reactor's policy: the rules, and the runbooks they run, loaded and checked together.

Loaded when the master starts and on ``saline reactor reload``; never re-read at a firing.
A rule naming a runbook that does not exist or does not validate, or a state that is not in
the tree, fails the load with the rule's ``file:line`` (a reload keeps the old policy).
"""

import fnmatch
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reactors.rules import (
    NotifyAction,
    OrchestrateAction,
    Rule,
    RuleError,
    StateAction,
    load_rule_sources,
)
from reactors.runbook import (
    Runbook,
    RunbookError,
    find_runbook,
    load_runbook,
    unknown_notify_target,
)

__all__ = ["Policy", "RuleIndex", "load_policy"]


class RuleIndex:
    """Which rules' ``on`` glob matches a tag: globs compiled once per load, answers cached
    per tag (beacon tags repeat), so a hundred rules cost one dict lookup per event."""

    def __init__(self, rules: list[Rule]) -> None:
        self._globs = [(re.compile(fnmatch.translate(r.on)).match, r) for r in rules]
        self._cache: dict[str, list[Rule]] = {}

    def matching(self, tag: str) -> list[Rule]:
        if not self._globs:
            return []
        hit = self._cache.get(tag)
        if hit is None:
            if len(self._cache) > 10_000:  # job tags are unique: keep the cache bounded
                self._cache.clear()
            hit = self._cache[tag] = [rule for match, rule in self._globs if match(tag)]
        return hit


@dataclass
class Policy:
    rules: list[Rule]
    #: runbook name -> the runbook, for every runbook an orchestrate action names
    runbooks: dict[str, Runbook] = field(default_factory=dict)
    #: rule name -> ``file:line``
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = RuleIndex(self.rules)

    def runbook(self, name: str) -> Runbook:
        """A runbook a rule names (loaded with the rules). :raises RunbookError: unknown."""
        runbook = self.runbooks.get(name)
        if runbook is None:
            raise RunbookError(f"runbook {name!r} was not loaded with the rules")
        return runbook


def load_policy(
    rule_paths: Sequence[Path],
    runbook_roots: list[Path],
    state_exists: Callable[[str], bool] | None = None,
    ships_states: Path | None = None,
    notify_targets: Collection[str] | None = None,
) -> Policy:
    """Rules of ``rule_paths`` and the runbooks their actions name, from ``runbook_roots``.

    ``state_exists`` tells whether a state name is in the tree (None: not checked); rules
    under ``ships_states`` are not checked against it: they come with their own state tree,
    which a master serving other states need not have. ``notify_targets`` are the names of
    the master's ``notify`` setting (None: not checked).

    :raises RuleError: ``file:line: rule 'NAME': do.N.KIND: why`` for the first problem.
    """
    loaded = load_rule_sources(rule_paths)
    runbooks: dict[str, Runbook] = {}
    for rule, where in loaded:
        for index, action in enumerate(rule.do):
            at = f"{where}: rule {rule.name!r}: do.{index}.{action.kind}"
            if isinstance(action, OrchestrateAction):
                try:
                    runbook = runbooks.get(action.runbook) or load_runbook(
                        find_runbook(action.runbook, runbook_roots)
                    )
                except RunbookError as e:
                    raise RuleError(f"{at}.runbook: {e}") from e
                problem = runbook.var_problem(action.vars)
                if problem is not None:
                    raise RuleError(f"{at}.vars: {problem}")
                if notify_targets is not None:
                    problem = unknown_notify_target(runbook, notify_targets)
                    if problem is not None:
                        raise RuleError(f"{at}.runbook: {problem}")
                runbooks[action.runbook] = runbook
            elif isinstance(action, NotifyAction) and notify_targets is not None:
                if action.target not in notify_targets:
                    known = (
                        f"known: {', '.join(sorted(notify_targets))}"
                        if notify_targets
                        else "none configured"
                    )
                    raise RuleError(f"{at}.target: no notify target {action.target!r} ({known})")
            elif (
                isinstance(action, StateAction)
                and state_exists
                and not (ships_states is not None and where.startswith(f"{ships_states}/"))
            ):
                unknown = [s for s in action.states if not state_exists(s)]
                if unknown:
                    raise RuleError(f"{at}.states: no state {unknown[0]!r} in the state tree")
    return Policy(
        rules=[rule for rule, _ in loaded],
        runbooks=runbooks,
        sources={rule.name: where for rule, where in loaded},
    )
