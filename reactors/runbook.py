"""Runbooks as typed data: ordered orchestration steps across targets (Salt's orchestrate).

A runbook file is YAML with a ``name``, default ``vars`` and ``steps``. Each step has exactly
one of ``run`` (an execution function), ``state`` (``state.apply``), ``wait_for`` (poll a
function until a condition holds on every targeted minion) or ``notify`` (tell people through
one of the master's notify targets), plus optional ``name``, ``batch``,
``failhard`` (default true), ``probe`` (a check whose failure only informs later steps) and
``when``. :func:`load_runbook` parses and validates a file;
every error is a :class:`RunbookError` naming ``file:line`` and the field. :func:`render_steps`
renders the template strings of every step with ``vars`` before anything runs, so an
undefined name stops the runbook before its first side effect.

Templates and expressions run in an immutable sandboxed Jinja environment with
``StrictUndefined``. Rendering is by value: a rendered string is never parsed again as YAML or
as a template, so a caller-supplied var cannot add structure or code to a step.
"""

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from saline.config import line_of, parse_yaml
from saline.durations import PositiveDuration
from saline.errors import SalineError, TargetError
from saline.targeting import TargetType, compile_target
from saline.templating import RULE_TEMPLATES, compile_expression, compile_template

__all__ = [
    "NotifySpec",
    "RunSpec",
    "Runbook",
    "RunbookError",
    "StateSpec",
    "Step",
    "StepKind",
    "WaitForSpec",
    "evaluate",
    "find_runbook",
    "load_runbook",
    "render_steps",
    "unknown_notify_target",
]

#: seconds a ``run`` or ``state`` job waits for each minion unless the step says otherwise
DEFAULT_JOB_TIMEOUT = 300.0
#: seconds each ``wait_for`` poll waits for returns (capped by the time left)
DEFAULT_POLL_TIMEOUT = 10.0
RUNBOOK_SUFFIX = ".yaml"

StepKind = Literal["run", "state", "wait_for", "notify"]
STEP_KINDS: tuple[StepKind, ...] = ("run", "state", "wait_for", "notify")
#: the fields of a step's spec whose strings are templates; ``condition`` and ``when`` are
#: expressions evaluated at run time, never rendered; a notify ``target`` is a literal name
_TEMPLATED = ("target", "function", "args", "kwargs", "states", "message")
# a library name: slash-separated words; no dots, so no "..", no suffix, nothing absolute
_NAME_RE = re.compile(r"\w[\w-]*(/\w[\w-]*)*")

#: what a template or expression over user data may raise; all are reported, none escape
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


class RunbookError(SalineError):
    """A runbook is missing, unparsable, invalid or fails to render (names file, line, field)."""


def _template(source: str) -> jinja2.Template:
    return compile_template(RULE_TEMPLATES, source)


def _expression(source: str) -> Callable[..., Any]:
    return compile_expression(RULE_TEMPLATES, source)


def _jinja_message(e: Exception) -> str:
    if isinstance(e, jinja2.TemplateSyntaxError):
        return f"syntax error: {e.message}"
    if isinstance(e, jinja2.UndefinedError):
        return f"undefined: {e.message}"
    return f"{type(e).__name__}: {e}"


def evaluate(expression: str, context: Mapping[str, Any]) -> bool:
    """The truth of a sandboxed Jinja ``expression`` over ``context``.

    :raises RunbookError: for a syntax error, an undefined name or a failing operation.
    """
    try:
        return bool(_expression(expression)(**context))
    except _RENDER_ERRORS as e:
        raise RunbookError(f"{expression!r}: {_jinja_message(e)}") from e


def _check_expression(value: str | None) -> str | None:
    if value is not None:
        try:
            _expression(value)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"invalid expression {value!r}: {e.message}") from None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Targeted(_Model):
    #: target expression; a template over ``vars``
    target: str = Field(min_length=1)
    tgt_type: TargetType = TargetType.GLOB


class RunSpec(_Targeted):
    """``run``: call an execution function on the target."""

    function: str = Field(min_length=1)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    #: seconds to wait for each minion's return
    timeout: PositiveDuration = DEFAULT_JOB_TIMEOUT


class StateSpec(_Targeted):
    """``state``: ``state.apply`` the named states on the target."""

    states: list[str] = Field(min_length=1)
    timeout: PositiveDuration = DEFAULT_JOB_TIMEOUT


class WaitForSpec(_Targeted):
    """``wait_for``: poll a function until ``condition`` holds for every targeted minion."""

    function: str = Field(min_length=1)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    #: expression over ``ret`` (one minion's return), ``minion`` and ``vars``
    condition: str = Field(min_length=1)
    interval: PositiveDuration = 5.0
    #: give up this long after the first poll
    timeout: PositiveDuration = 300.0
    poll_timeout: PositiveDuration = DEFAULT_POLL_TIMEOUT

    _condition = field_validator("condition")(_check_expression)


class NotifySpec(_Model):
    """``notify``: queue a notice to one of the master's ``notify`` targets (the runbook does
    not wait for its delivery; the notice carries the steps run so far)."""

    #: a literal target name from the master's ``notify`` setting (checked at load)
    target: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    #: a template over ``vars``
    message: str = Field(min_length=1, max_length=4096)


#: a step's spec, by kind
Spec = RunSpec | StateSpec | WaitForSpec | NotifySpec


class Step(_Model):
    """One step: exactly one of ``run``, ``state``, ``wait_for`` or ``notify``."""

    #: unique in the runbook; defaults to ``step N`` (1-based); never rendered
    name: str = ""
    run: RunSpec | None = None
    state: StateSpec | None = None
    wait_for: WaitForSpec | None = None
    notify: NotifySpec | None = None
    #: minions per batch, in sorted id order; none: all at once
    batch: int | None = Field(default=None, ge=1)
    #: a failed step (or batch) stops the runbook
    failhard: bool = True
    #: a check whose failure is information, not failure: it never stops the runbook nor
    #: fails it; later steps read its result through ``when`` (a graded ladder's rungs)
    probe: bool = False
    #: expression over ``vars``, ``steps`` (results so far, by name) and ``test``; false skips
    when: str | None = None

    _when = field_validator("when")(_check_expression)

    @model_validator(mode="after")
    def _one_kind(self) -> "Step":
        kinds = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            found = f" (found {', '.join(kinds)})" if kinds else ""
            raise ValueError(f"a step needs exactly one of {', '.join(STEP_KINDS)}{found}")
        if (self.wait_for or self.notify) is not None and self.batch is not None:
            raise ValueError(f"batch does not apply to {self.kind}")
        if self.probe and "failhard" in self.model_fields_set and self.failhard:
            raise ValueError("a probe never stops the runbook: drop failhard: true")
        return self

    @property
    def kind(self) -> StepKind:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> Spec:
        spec: Spec | None = self.run or self.state or self.wait_for or self.notify
        assert spec is not None  # guaranteed by _one_kind
        return spec


class Runbook(_Model):
    """A validated runbook. Build it with :func:`load_runbook` to get file:line in errors."""

    name: str = Field(min_length=1)
    description: str = ""
    #: defaults; callers' vars override them key by key (shallow merge)
    vars: dict[str, Any] = {}
    #: vars without a default that every caller must give (``saline orchestrate`` says
    #: which ``--var`` is missing, and refuses a var that is neither here nor in ``vars``)
    requires: list[str] = []
    steps: list[Step] = Field(min_length=1)

    def var_problem(self, given: Mapping[str, Any]) -> str | None:
        """What is wrong with a caller's ``given`` vars (missing, unknown); None if nothing."""
        missing = [v for v in self.requires if v not in given]
        if missing:
            flags = " ".join(f"--var {v}=..." for v in missing)
            return f"runbook {self.name} needs {flags}"
        known = set(self.vars) | set(self.requires)
        unknown = sorted(k for k in given if k not in known)
        if unknown:
            takes = ", ".join(sorted(known)) or "no vars"
            return f"runbook {self.name} has no var {', '.join(unknown)} (it takes: {takes})"
        return None

    _source: str = PrivateAttr(default="<runbook>")
    _lines: tuple[int | None, ...] = PrivateAttr(default=())

    @field_validator("steps")
    @classmethod
    def _names(cls, steps: list[Step]) -> list[Step]:
        named = [
            step if step.name else step.model_copy(update={"name": f"step {number}"})
            for number, step in enumerate(steps, 1)
        ]
        seen: dict[str, int] = {}
        for index, step in enumerate(named):
            if step.name in seen:
                raise ValueError(
                    f"duplicate step name {step.name!r} (steps[{seen[step.name]}] and "
                    f"steps[{index}])"
                )
            seen[step.name] = index
        return named

    def where(self, index: int) -> str:
        """``file:line`` of step ``index`` (just the file when the line is unknown)."""
        line = self._lines[index] if index < len(self._lines) else None
        return f"{self._source}:{line}" if line else self._source


def _field(loc: tuple[int | str, ...]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return text or "(top)"


def load_runbook(source: Path | str, name: str | None = None) -> Runbook:
    """Parse and validate a runbook from a file (a :class:`Path`) or from YAML text (a ``str``).

    ``name`` is the runbook's name when the YAML has no ``name:`` (a file defaults to its
    stem) and labels errors for text (files are labelled by their path).

    :raises RunbookError: ``file:line: field: message`` for the first problem found, including
        template syntax errors.
    """
    if isinstance(source, Path):
        label = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RunbookError(f"{source}: cannot read runbook: {e}") from e
        default_name = name or source.stem
    else:
        text, label, default_name = source, name or "<runbook>", name or ""
    node, data = parse_yaml(text, label, RunbookError)
    if not isinstance(data, dict):
        raise RunbookError(f"{label}:1: a runbook must be a mapping with name, vars and steps")
    if default_name:
        data.setdefault("name", default_name)
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        line_no = line_of(node, loc)
        where = f"{label}:{line_no}" if line_no else label
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise RunbookError(f"{where}: {_field(loc)}: {msg}{more}") from e
    runbook._source = label
    runbook._lines = tuple(line_of(node, ("steps", i)) for i in range(len(runbook.steps)))
    _check_templates(runbook)
    return runbook


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value`` (lists and mapping values), with its field path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")


def _templated(step: Step) -> Iterator[tuple[str, str]]:
    for key in _TEMPLATED:
        if key in type(step.spec).model_fields:
            yield from _strings(getattr(step.spec, key), f"{step.kind}.{key}")


def _check_templates(runbook: Runbook) -> None:
    for index, step in enumerate(runbook.steps):
        for path, text in _templated(step):
            try:
                _template(text)
            except jinja2.TemplateSyntaxError as e:
                raise RunbookError(
                    f"{runbook.where(index)}: step {step.name!r}: {path}: {_jinja_message(e)}"
                ) from e


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    """``value`` with every string rendered; :raises RunbookError: ``path: message``."""
    if isinstance(value, str):
        try:
            return _template(value).render(context)
        except _RENDER_ERRORS as e:
            raise RunbookError(f"{path}: {_jinja_message(e)}") from e
    if isinstance(value, list):
        return [_render(item, context, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _render(item, context, f"{path}.{key}") for key, item in value.items()}
    return value


def render_steps(runbook: Runbook, vars: Mapping[str, Any]) -> list[Step]:
    """The runbook's steps with every template string rendered over ``vars``, targets checked.

    :raises RunbookError: ``file:line: step 'name': field: message`` for an undefined name, a
        template error or a rendered target that does not parse.
    """
    context = {"vars": vars}
    return [_render_step(runbook, i, step, context) for i, step in enumerate(runbook.steps)]


def _render_step(runbook: Runbook, index: int, step: Step, context: Mapping[str, Any]) -> Step:
    spec = step.spec
    where = f"{runbook.where(index)}: step {step.name!r}"
    update: dict[str, Any] = {}
    try:
        for key in _TEMPLATED:
            if key in type(spec).model_fields:
                update[key] = _render(getattr(spec, key), context, f"{step.kind}.{key}")
    except RunbookError as e:
        raise RunbookError(f"{where}: {e}") from e
    rendered = spec.model_copy(update=update)
    if isinstance(rendered, _Targeted):
        try:
            compile_target(rendered.target, rendered.tgt_type)
        except TargetError as e:
            raise RunbookError(f"{where}: {step.kind}.target: {e}") from e
    return step.model_copy(update={step.kind: rendered})


def unknown_notify_target(runbook: Runbook, known: Collection[str]) -> str | None:
    """``file:line: step 'name': notify.target: ...`` for the first ``notify`` step naming a
    target that is not in ``known`` (the master's ``notify`` names); None if all are."""
    for index, step in enumerate(runbook.steps):
        if step.notify is not None and step.notify.target not in known:
            have = f"known: {', '.join(sorted(known))}" if known else "none configured"
            return (
                f"{runbook.where(index)}: step {step.name!r}: notify.target: no notify target "
                f"{step.notify.target!r} ({have})"
            )
    return None


def find_runbook(name: str, roots: list[Path]) -> Path:
    """The file of library runbook ``name``, from the first root that has it.

    ``chef_ha/refollow`` is ``<root>/chef_ha/refollow.yaml``.

    Names are slash-separated words (letters, digits, ``_``, ``-``): ``..``, absolute paths and
    suffixes are refused, as is a file whose real path leaves its root (a symlink out).

    :raises RunbookError: for a refused name or when no root has the runbook.
    """
    if not _NAME_RE.fullmatch(name):
        raise RunbookError(
            f"invalid runbook name {name!r}: expected words separated by '/', like chef_ha/refollow"
        )
    for root in roots:
        candidate = root / f"{name}{RUNBOOK_SUFFIX}"
        if not candidate.is_file():
            continue
        if not candidate.resolve().is_relative_to(root.resolve()):
            raise RunbookError(f"runbook {name!r}: {candidate} leads outside {root}")
        return candidate
    searched = ", ".join(str(root) for root in roots) or "(no roots)"
    raise RunbookError(f"no runbook {name!r} in {searched}")
