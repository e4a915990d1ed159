"""Jinja rendering for state files and ``template: jinja`` sources, sandboxed and strict.

The sandbox keeps templates from reaching Python internals; ``StrictUndefined`` turns a
misspelt ``pillar.foo`` into an error naming it instead of an empty string. Values from
grains and pillar are data in the context: they are never rendered as template source.
"""

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from saline.errors import StateError

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # renders YAML and config files, not HTML
)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    # fifty states rendering one template compile it once
    return _ENV.from_string(source)


def render_jinja(source: str, *, name: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` (called ``name`` in errors) with ``context``.

    :raises StateError: ``name:line: message`` for syntax errors and undefined values.
    """
    try:
        return _compile(source).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise StateError(f"{name}:{e.lineno}: template syntax error: {e.message}") from e
    except jinja2.UndefinedError as e:
        raise StateError(f"{name}: undefined in template: {e.message}") from e
    except jinja2.TemplateError as e:
        raise StateError(f"{name}: template error: {e}") from e
