"""The one sandboxed Jinja module: every template saline renders is built here.

Two named environments, made by one factory (:func:`sandbox`) and differing only in the
explicit parameters below; both are sandboxed (no reaching Python internals), strict
(``StrictUndefined``: a misspelt ``pillar.foo`` is an error naming it, not an empty string)
and unescaped (they render YAML, config files and function arguments, not HTML):

========================  =========  ==================  ===================================
environment               immutable  trailing newline    used for
========================  =========  ==================  ===================================
:data:`FILE_TEMPLATES`    no         kept                state files, ``file.managed``
                                                         templates, pillar files
:data:`RULE_TEMPLATES`    yes        dropped (Jinja's    reactor rule conditions and action
                                     default)            templates, runbook templates and
                                                         expressions
========================  =========  ==================  ===================================

Rules and runbooks are evaluated over event data and caller-supplied vars, so they may not
mutate what they read (``event.data.clear()`` is refused). Values always reach templates as
context, never as template source.
"""

import functools
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from saline.errors import SalineError

__all__ = [
    "FILE_TEMPLATES",
    "RULE_TEMPLATES",
    "RenderError",
    "compile_expression",
    "compile_template",
    "render",
    "sandbox",
]


class RenderError(SalineError):
    """A template failed to compile or render (message names the template and the line)."""


@functools.cache
def sandbox(*, immutable: bool, keep_trailing_newline: bool = False) -> SandboxedEnvironment:
    """The strict, unescaped sandboxed environment with these settings (one per combination).

    :param immutable: refuse calls that mutate builtin containers (``list.append``,
        ``dict.update``...) on the context's data.
    :param keep_trailing_newline: keep a template's final newline (config files end in one).
    """
    kind = ImmutableSandboxedEnvironment if immutable else SandboxedEnvironment
    return kind(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=keep_trailing_newline,
        autoescape=False,
    )


#: state files, ``file.managed`` templates and pillar files: text rendered to YAML or files
FILE_TEMPLATES: Final = sandbox(immutable=False, keep_trailing_newline=True)
#: rule conditions and action templates, runbook templates and ``when``/``condition``
#: expressions: evaluated over event data and vars they must not change
RULE_TEMPLATES: Final = sandbox(immutable=True)


@functools.lru_cache(maxsize=1024)
def compile_template(env: jinja2.Environment, source: str) -> jinja2.Template:
    """``source`` compiled in ``env``, once (fifty states rendering one template share it).

    :raises jinja2.TemplateSyntaxError: for invalid source (not cached).
    """
    return env.from_string(source)


@functools.lru_cache(maxsize=1024)
def compile_expression(env: jinja2.Environment, source: str) -> Callable[..., Any]:
    """The single Jinja expression ``source`` compiled in ``env``, once; calling it with the
    context returns the expression's value (an undefined name gives a ``StrictUndefined``,
    which raises as soon as it is used, never None).

    :raises jinja2.TemplateSyntaxError: for invalid source (not cached).
    """
    return env.compile_expression(source, undefined_to_none=False)


def render(
    source: str,
    *,
    name: str,
    context: Mapping[str, Any],
    env: jinja2.Environment = FILE_TEMPLATES,
    error: type[SalineError] = RenderError,
) -> str:
    """Render template ``source`` (called ``name`` in errors) in ``env`` with ``context``.

    Errors raised on purpose inside the template (a :class:`SalineError` from a function in
    the context) pass through unchanged.

    :raises error: ``name:line: template syntax error: ...``, ``name:line: undefined in
        template: ...`` or ``name:line: template error: ...``.
    """
    try:
        return compile_template(env, source).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise error(f"{name}:{e.lineno}: template syntax error: {e.message}") from e
    except jinja2.UndefinedError as e:
        raise error(f"{_where(name, e)}: undefined in template: {e.message}") from e
    except jinja2.TemplateError as e:
        raise error(f"{_where(name, e)}: template error: {e}") from e


def _where(name: str, e: BaseException) -> str:
    """``name:line`` of the template line that raised (Jinja rewrites the traceback so its
    frames are the template's own lines), or just ``name`` when no frame says."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
    return f"{name}:{lines[-1]}" if lines and lines[-1] else name
