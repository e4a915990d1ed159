"""Jinja rendering for state files and ``template: jinja`` sources, sandboxed and strict.

The environment is :data:`saline.templating.FILE_TEMPLATES` (mutable sandbox,
``StrictUndefined``, trailing newline kept): the sandbox keeps templates from reaching Python
internals; ``StrictUndefined`` turns a misspelt ``pillar.foo`` into an error naming it instead
of an empty string. Values from grains and pillar are data in the context: they are never
rendered as template source.
"""

from collections.abc import Mapping
from typing import Any

from saline.errors import StateError
from saline.templating import FILE_TEMPLATES, render


def render_jinja(source: str, *, name: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` (called ``name`` in errors) with ``context``.

    :raises StateError: ``name:line: message`` for syntax errors and undefined values.
    """
    return render(source, name=name, context=context, env=FILE_TEMPLATES, error=StateError)
