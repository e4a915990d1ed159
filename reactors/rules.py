"""Reactor rule models and YAML loading.

A rule file is a YAML list of rules (see :class:`Rule`). :func:`load_rules` validates every
``*.yaml`` file of the given directories and fails on the first problem with
``file:line: field: message``; conditions and templates are compiled at load time so a typo
fails the master's start, not the first 3am event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from reactors.expressions import ExpressionError, check_condition, check_template, is_template
from saline.config import line_of, parse_yaml
from saline.durations import Duration, format_duration, parse_duration
from saline.errors import SalineError, TargetError
from saline.targeting import TargetType, compile_target

__all__ = [
    "Action",
    "EscalateAction",
    "FireAction",
    "Flap",
    "Guard",
    "NotifyAction",
    "OrchestrateAction",
    "Rule",
    "RuleError",
    "RunAction",
    "StateAction",
    "Throttle",
    "format_duration",  # re-exported: the grammar lives in saline.durations
    "load_rule_sources",
    "load_rules",
    "parse_duration",  # re-exported: the grammar lives in saline.durations
    "template_problem",
]


class RuleError(SalineError):
    """A rule file is unreadable or invalid (message names file, line and field)."""


# --- actions ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunAction(_Model):
    """Run one execution-module function on the target, as ``saline run`` would."""

    kind: Literal["run"] = "run"
    #: a literal target of ``tgt_type``, or a template rendering to minion id(s) (always ``list``)
    target: str
    tgt_type: TargetType = TargetType.GLOB
    function: str = Field(pattern=r"^[A-Za-z_][\w]*\.[A-Za-z_][\w]*$")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class StateAction(_Model):
    """Apply states (empty ``states``: highstate) on the target, as ``saline state apply``."""

    kind: Literal["state"] = "state"
    target: str
    tgt_type: TargetType = TargetType.GLOB
    #: literal state names: event data never chooses what is applied
    states: list[Annotated[str, Field(pattern=r"^[\w.-]+$")]] = []
    test: bool = False


class OrchestrateAction(_Model):
    """Run an orchestration runbook on the master with ``vars``."""

    kind: Literal["orchestrate"] = "orchestrate"
    #: a literal runbook name: event data never chooses what runs
    runbook: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)*$")
    vars: dict[str, Any] = {}
    test: bool = False


class FireAction(_Model):
    """Publish an event on the bus (it carries this reaction's cause and depth)."""

    kind: Literal["fire"] = "fire"
    tag: str = Field(min_length=1)
    data: dict[str, Any] = {}


class NotifyAction(_Model):
    """Tell people through one of the master's ``notify`` targets (the chain is attached)."""

    kind: Literal["notify"] = "notify"
    #: a literal target name from the master's ``notify`` setting (checked at load)
    target: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    #: a template over the event, like any action's strings
    message: str = Field(default="{{ event.tag }}", min_length=1, max_length=4096)


class EscalateAction(_Model):
    """Tell a human instead of acting: the decision is ``escalate`` with this reason (stored,
    published as ``saline/reactor/RULE/escalated`` and notified like any escalation). The
    only action of its rule; throttle, cooldown, ``once_after`` and ``grace`` apply to it as
    to any."""

    kind: Literal["escalate"] = "escalate"
    #: a template over the event, like any action's strings
    reason: str = Field(min_length=1, max_length=4096)


ACTION_KINDS: Final = ("run", "state", "orchestrate", "fire", "notify", "escalate")


def _unwrap_action(value: Any) -> Any:
    """Turn the YAML shape ``{run: {...}}`` into ``{kind: run, ...}``; dumps already have kind."""
    if not isinstance(value, Mapping) or "kind" in value:
        return value
    if len(value) != 1:
        raise ValueError(f"an action is a mapping with exactly one of {', '.join(ACTION_KINDS)}")
    ((kind, body),) = value.items()
    if kind not in ACTION_KINDS:
        raise ValueError(f"unknown action {kind!r} (expected one of {', '.join(ACTION_KINDS)})")
    if not isinstance(body, Mapping):
        raise ValueError(f"{kind}: expected a mapping of parameters")
    return {**body, "kind": kind}


Action = Annotated[
    RunAction | StateAction | OrchestrateAction | FireAction | NotifyAction | EscalateAction,
    Field(discriminator="kind"),
    BeforeValidator(_unwrap_action),
]


# --- guards -----------------------------------------------------------------------------------


class Throttle(_Model):
    """Per-key rate limit. ``key`` is a template (default: the event tag)."""

    key: str | None = None
    #: leading edge: act on the first event, skip the others for this long
    once_within: Duration | None = None
    #: trailing edge: act once no new matching event came for this long
    once_after: Duration | None = None
    #: act this long after the first matching event if the condition still holds then; later
    #: matching events do not push it back (a fault a beacon reasserts would, with once_after)
    grace: Duration | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> Throttle:
        chosen = [m for m in ("once_within", "once_after", "grace") if getattr(self, m) is not None]
        if len(chosen) > 1:
            both = " and ".join(chosen)
            raise ValueError(f"choose one of once_within, once_after and grace, not {both}")
        return self

    @property
    def deferred(self) -> float | None:
        """How long a reaction is held (once_after or grace); None: decided at once."""
        return self.once_after if self.once_after is not None else self.grace


class Guard(_Model):
    """Concurrency (and, for disruptive rules, quorum) group: a compound target expression."""

    group: str = Field(min_length=1)
    max_concurrent: int = Field(default=1, ge=1)


class Flap(_Model):
    """More than ``max`` firings per key within ``window`` escalates and stops acting."""

    max: int = Field(ge=1)
    window: Duration


class Rule(_Model):
    """One reactor rule: match ``on`` (tag glob) and ``when``, then ``do`` the actions, guarded.

    Validating a Rule also compiles its condition and templates (see :func:`template_problem`).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    on: str = Field(min_length=1)
    when: str | None = None
    do: list[Action] = Field(min_length=1)
    throttle: Throttle | None = None
    guard: Guard | None = None
    disruptive: bool = False
    mode: Literal["act", "dry_run", "approve"] = "act"
    cooldown: Duration = 60.0
    ignore_own: bool = True
    #: safe by default: a rule that keeps firing for one key is stopped and escalated;
    #: ``flap: null`` turns this off
    flap: Flap | None = Flap(max=3, window=600.0)

    @property
    def escalates(self) -> bool:
        """The rule tells a human and acts on nothing (its action is ``escalate``)."""
        return any(isinstance(action, EscalateAction) for action in self.do)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Rule:
        if self.disruptive and self.guard is None:
            raise ValueError("a disruptive rule needs guard.group (the quorum guard uses it)")
        if self.escalates and len(self.do) > 1:
            raise ValueError("do: escalate is its rule's only action (it acts on nothing)")
        if self.escalates and self.mode == "approve":
            raise ValueError("mode: an escalate rule acts on nothing: there is nothing to approve")
        if isinstance(info.context, Mapping) and info.context.get("defer_template_check"):
            return self
        problem = template_problem(self)
        if problem is not None:
            loc, message = problem
            raise ValueError(f"{'.'.join(map(str, loc))}: {message}")
        return self


#: how a glob or grain target is written as a compound expression (for ClusterView.members)
COMPOUND_FORM: Final[dict[TargetType, Callable[[str], str]]] = {
    TargetType.GLOB: lambda target: target.strip(),
    TargetType.GRAIN: lambda target: f"G@{target.strip()}",
    TargetType.COMPOUND: lambda target: target,
}

# --- load-time checks of conditions, templates and targets ------------------------------------

Loc = tuple[str | int, ...]


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*loc, str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, (*loc, i))


def _target_problem(action: RunAction | StateAction) -> str | None:
    if is_template(action.target):
        if "tgt_type" in action.model_fields_set and action.tgt_type is not TargetType.LIST:
            # Event data must never choose the shape of a target: a templated target renders
            # to literal minion ids only.
            return "a templated target is a literal minion id list; use tgt_type list or omit it"
        return None
    if action.tgt_type in (TargetType.GLOB, TargetType.GRAIN) and len(action.target.split()) > 1:
        return f"a {action.tgt_type.value} target cannot contain spaces (use tgt_type compound)"
    try:
        matcher = compile_target(action.target, action.tgt_type)
        # The engine asks the view for members with a compound expression; a glob or grain
        # target must mean the same there (no "L@x" glob, no stray parentheses).
        as_compound = COMPOUND_FORM.get(action.tgt_type)
        if as_compound and compile_target(as_compound(action.target), "compound") != matcher:
            return f"{action.target!r} reads differently as compound; set tgt_type compound"
    except TargetError as e:
        return str(e)
    return None


def template_problem(rule: Rule) -> tuple[Loc, str] | None:
    """The first invalid condition, template or target of ``rule`` as (location, message)."""
    checks: list[tuple[Loc, str, bool]] = []
    if rule.when is not None:
        checks.append((("when",), rule.when, True))
    if rule.throttle is not None and rule.throttle.key is not None:
        checks.append((("throttle", "key"), rule.throttle.key, False))
    if rule.guard is not None:
        try:
            compile_target(rule.guard.group, TargetType.COMPOUND)
        except TargetError as e:
            return ("guard", "group"), str(e)
    for index, action in enumerate(rule.do):
        loc: Loc = ("do", index, action.kind)
        if isinstance(action, RunAction | StateAction):
            problem = _target_problem(action)
            if problem is not None:
                return (*loc, "target"), problem
        dumped = action.model_dump(mode="json", exclude={"kind"})
        checks.extend((at, text, False) for at, text in _strings(dumped, loc))
    for at, text, is_condition in checks:
        try:
            if is_condition:
                check_condition(text)
            elif is_template(text):
                check_template(text)
        except ExpressionError as e:
            return at, str(e)
    return None


# --- loading ----------------------------------------------------------------------------------


def _read(path: Path) -> tuple[yaml.Node | None, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise RuleError(f"{path}: cannot read rule file: {e.strerror}") from e
    return parse_yaml(text, str(path), RuleError)


def _load_file(path: Path) -> Iterator[tuple[Rule, int]]:
    node, data = _read(path)
    if data is None or node is None:
        return
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise RuleError(f"{path}:1: a rule file is a YAML list of rules")
    for item, item_node in zip(data, node.value, strict=True):
        line = item_node.start_mark.line + 1
        if not isinstance(item, dict):
            raise RuleError(f"{path}:{line}: a rule is a mapping (name, on, do, ...)")
        if True in item:  # YAML 1.1 reads the bare key `on` as the boolean true
            item["on"] = item.pop(True)
        label = f"rule {item.get('name')!r}: " if isinstance(item.get("name"), str) else ""
        try:
            rule = Rule.model_validate(item, context={"defer_template_check": True})
        except ValidationError as e:
            err = e.errors()[0]
            loc: Loc = tuple(err["loc"])
            field = ".".join(map(str, loc)) or "(rule)"
            msg = err["msg"].removeprefix("Value error, ")
            where = f"{path}:{line_of(item_node, loc)}"
            raise RuleError(f"{where}: {label}{field}: {msg}") from e
        problem = template_problem(rule)
        if problem is not None:
            loc, msg = problem
            where = f"{path}:{line_of(item_node, loc)}"
            raise RuleError(f"{where}: {label}{'.'.join(map(str, loc))}: {msg}")
        yield rule, line


def load_rules(paths: Sequence[Path]) -> list[Rule]:
    """Load every ``*.yaml`` file of the directories in ``paths`` (files are taken as given).

    Files load in sorted order per directory; rules keep file order.

    :raises RuleError: ``file:line: field: message`` for the first problem, including a rule
        name used twice (across all files) and conditions or templates that do not compile.
    """
    return [rule for rule, _ in load_rule_sources(paths)]


def load_rule_sources(paths: Sequence[Path]) -> list[tuple[Rule, str]]:
    """:func:`load_rules`, each rule with the ``file:line`` it is defined at."""
    rules: list[tuple[Rule, str]] = []
    seen: dict[str, str] = {}
    for base in paths:
        if base.is_dir():
            files = sorted(base.glob("*.yaml"))
        elif base.is_file():
            files = [base]
        else:
            raise RuleError(f"{base}: no such rule file or directory")
        for path in files:
            for rule, line in _load_file(path):
                if rule.name in seen:
                    raise RuleError(
                        f"{path}:{line}: name: duplicate rule name {rule.name!r} "
                        f"(first defined at {seen[rule.name]})"
                    )
                seen[rule.name] = f"{path}:{line}"
                rules.append((rule, seen[rule.name]))
    return rules
