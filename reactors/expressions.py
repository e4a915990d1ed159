"""Sandboxed Jinja for rule conditions (``when``) and action parameter templates.

Contract: only a rule's own strings are ever template source. Event data reaches templates as
values in the context (``event``, ``view``); a rendered result is plain data and is never
rendered again, so ``{{ 7*7 }}`` inside event data stays those eight characters. The
environment is immutable-sandboxed (templates cannot call ``dict.clear()`` on event data) and
strict (a misspelt ``event.data.nmae`` is an error, not an empty string).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import jinja2
from jinja2 import meta, nodes
from jinja2.parser import Parser

from reactors.checks import CheckError, call_problem
from saline.errors import SalineError
from saline.templating import RULE_TEMPLATES, compile_expression, compile_template

__all__ = [
    "ExpressionError",
    "check_condition",
    "check_template",
    "evaluate_condition",
    "is_template",
    "render_text",
    "render_value",
    "single_expression",
]

#: immutable sandbox, strict, unescaped (values feed function arguments, not HTML)
_ENV: Final = RULE_TEMPLATES
#: the names a rule's expressions may use besides Jinja's own globals (range, dict, ...)
CONTEXT_NAMES: Final = frozenset({"event", "view", "check"})
_SINGLE_RE: Final = re.compile(r"\A\{\{-?(?P<expr>.*?)-?\}\}\Z", re.DOTALL)
_MARKERS: Final = ("{{", "{%", "{#")


class ExpressionError(SalineError, ValueError):
    """A condition or template failed to compile, or failed while evaluating an event.

    A ValueError too, so pydantic validators may raise it as a field error.
    """


def is_template(text: str) -> bool:
    """True if ``text`` contains Jinja syntax (and so is rendered rather than used as is)."""
    return any(marker in text for marker in _MARKERS)


def single_expression(text: str) -> str | None:
    """The inner expression if ``text`` is exactly one ``{{ expr }}`` block, else None."""
    match = _SINGLE_RE.match(text.strip())
    if match is None:
        return None
    inner = match.group("expr")
    # "{{ a }} and {{ b }}" matches the regex too; one block never contains a delimiter.
    if "{{" in inner or "}}" in inner:
        return None
    return inner.strip()


def _unknown_names(names: set[str]) -> str | None:
    unknown = sorted(names - CONTEXT_NAMES - set(_ENV.globals))
    if not unknown:
        return None
    known = ", ".join(repr(name) for name in sorted(CONTEXT_NAMES))
    return f"unknown name {unknown[0]!r} (expressions see only {known})"


def _check_problem(tree: nodes.Node) -> str | None:
    """The first ``check.NAME`` in ``tree`` that names no check, or is called with arguments
    its signature refuses: a typo fails at load, naming the check."""
    found = [tree, *tree.find_all((nodes.Call, nodes.Getattr))]  # find_all skips the root
    calls = {id(node.node): node for node in found if isinstance(node, nodes.Call)}
    for attr in (node for node in found if isinstance(node, nodes.Getattr)):
        if not (isinstance(attr.node, nodes.Name) and attr.node.name == "check"):
            continue
        call = calls.get(id(attr))
        positional: int | None = None  # not called here, or with *args: the name only
        keywords: list[str] = []
        if call is not None and call.dyn_args is None and call.dyn_kwargs is None:
            positional, keywords = len(call.args), [kw.key for kw in call.kwargs]
        try:
            problem = call_problem(attr.attr, positional, keywords)
        except CheckError as e:  # a check plugin failed to load
            return str(e)
        if problem is not None:
            return problem
    return None


def _compile_expression(source: str) -> Callable[..., Any]:
    # every event evaluates the same few conditions: compiled once (cached in templating)
    try:
        return compile_expression(_ENV, source)
    except jinja2.TemplateSyntaxError as e:
        raise ExpressionError(f"expression syntax error: {e.message}") from e


def _compile_template(source: str) -> jinja2.Template:
    try:
        return compile_template(_ENV, source)
    except jinja2.TemplateSyntaxError as e:
        raise ExpressionError(f"template syntax error (line {e.lineno}): {e.message}") from e


def check_condition(source: str) -> None:
    """Compile ``source`` as an expression; raise :class:`ExpressionError` if it is invalid."""
    if not source.strip():
        raise ExpressionError("empty expression")
    _compile_expression(source)
    # Parse again only to list the names it reads: a typo ("evnt") fails at load, not at 3am.
    parser = Parser(_ENV, source, state="variable")
    expr = parser.parse_expression()
    loaded = {n.name for n in expr.find_all(nodes.Name) if n.ctx == "load"}
    problem = _unknown_names(loaded) or _check_problem(expr)
    if problem:
        raise ExpressionError(problem)


def check_template(text: str) -> None:
    """Compile the template string ``text``; raise :class:`ExpressionError` if it is invalid."""
    inner = single_expression(text)
    if inner is not None:
        check_condition(inner)
        return
    _compile_template(text)
    tree = _ENV.parse(text)
    problem = _unknown_names(meta.find_undeclared_variables(tree)) or _check_problem(tree)
    if problem:
        raise ExpressionError(problem)


def _plain(value: Any, path: str = "value") -> Any:
    """Copy a rendered result into plain JSON-like data; refuse anything else.

    Copying also keeps decisions from aliasing (and later mutating) the event's own data.
    """
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)  # Markup and other str subclasses become plain str
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ExpressionError(f"{path} rendered to a {type(value).__name__}, not data")


def _fail(what: str, exc: Exception) -> ExpressionError:
    if isinstance(exc, jinja2.UndefinedError):
        return ExpressionError(f"undefined in {what}: {exc.message}")
    return ExpressionError(f"{what} failed: {exc}")


def evaluate_condition(source: str, context: Mapping[str, Any]) -> bool:
    """Evaluate the ``when`` expression ``source`` against ``context``; return its truth.

    :raises ExpressionError: on syntax errors, undefined values and errors raised inside.
    """
    func = _compile_expression(source)
    try:
        return bool(func(**context))
    except ExpressionError:
        raise
    except (jinja2.TemplateError, SalineError, ArithmeticError, LookupError, TypeError) as e:
        raise _fail("condition", e) from e


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render a rule's template string to text (used for throttle keys)."""
    if not is_template(text):
        return text
    try:
        return _compile_template(text).render(**context)
    except ExpressionError:
        raise
    except (jinja2.TemplateError, SalineError, ArithmeticError, LookupError, TypeError) as e:
        raise _fail(f"template {text!r}", e) from e


def render_value(value: Any, context: Mapping[str, Any], path: str = "value") -> Any:
    """Render every string inside ``value`` (recursively) as one of the rule's templates.

    A string that is exactly one ``{{ expr }}`` keeps the expression's native type (a list stays
    a list); other template strings render to text; plain strings are returned unchanged.
    Mapping keys are never rendered. The result is plain data and is not rendered again.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        inner = single_expression(value)
        if inner is None:
            return render_text(value, context)
        try:
            return _plain(_compile_expression(inner)(**context), path)
        except ExpressionError:
            raise
        except (jinja2.TemplateError, SalineError, ArithmeticError, LookupError, TypeError) as e:
            raise _fail(f"template {value!r}", e) from e
    if isinstance(value, Mapping):
        return {k: render_value(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
