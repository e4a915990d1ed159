"""Parse a rendered state file into include names and validated chunks.

Pure: text in, models out, no I/O. Both Salt shapes of arguments are accepted, a list of
one-key mappings (``- mode: "0644"``) or a plain mapping (``mode: "0644"``). Every error
is a :class:`StateError` ``file:line: id: module.function: problem``; values are never
quoted in errors, as rendered state files may hold secrets from pillar.
"""

import difflib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from saline.errors import StateError
from saline.shellwords import refusal
from states.model import Chunk, Registry, Requisite, RequisiteKind
from states.modules.base import StateFunction

__all__ = ["Document", "Path", "parse_declarations", "parse_yaml"]

_STATE_RE = re.compile(r"\w+\.\w+")
# requisite key -> (kind, declared in reverse)
_REQUISITE_KEYS: dict[str, tuple[RequisiteKind, bool]] = {
    **{kind.value: (kind, False) for kind in RequisiteKind},
    **{f"{kind.value}_in": (kind, True) for kind in RequisiteKind},
}
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

#: a position in a YAML document: mapping keys (as written) and sequence indexes
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """A parsed state file and the line of every mapping key and sequence item in it."""

    file: str
    data: Any
    lines: Mapping[Path, int]

    def line(self, at: Path) -> int:
        """Line of ``at``, or of its nearest ancestor with a known line."""
        for end in range(len(at), 0, -1):
            found = self.lines.get(at[:end])
            if found is not None:
                return found
        return 1

    def error(self, at: Path, message: str) -> StateError:
        return StateError(f"{self.file}:{self.line(at)}: {message}")


def parse_yaml(text: str, file: str) -> Document:
    """Parse one YAML document; refuses duplicate mapping keys (YAML would keep the last).

    :raises StateError: ``file:line: ...`` for syntax errors and duplicate keys.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        raise StateError(f"{file}:{line}: invalid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise StateError(f"{file}: invalid YAML: {e}") from e
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    if node is not None:
        _index_lines(node, (), lines, file, set())
    return Document(file=file, data=data, lines=lines)


def _index_lines(
    node: yaml.Node, at: Path, lines: dict[Path, int], file: str, seen: set[int]
) -> None:
    """Record the line of each key and item below ``node``.

    ``seen`` stops at nodes reached again through an alias: walking them once per alias
    would make an alias bomb exponential. Paths through an alias fall back to its line.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first:
                raise StateError(
                    f"{file}:{line}: duplicate key {key.value!r} (first at line {first[key.value]})"
                )
            first[key.value] = line
            lines[(*at, key.value)] = line
            _index_lines(value, (*at, key.value), lines, file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*at, index)] = item.start_mark.line + 1
            _index_lines(item, (*at, index), lines, file, seen)


@dataclass(frozen=True)
class _Arg:
    """One argument of a state call and where it is written."""

    key: str
    value: Any
    at: Path


def parse_declarations(
    doc: Document, sls: str, registry: Registry
) -> tuple[list[tuple[str, Path]], list[Chunk]]:
    """Return the includes (name, position) and the chunks of state ``sls``, in file order.

    :raises StateError: wrong shape, unknown module/function/argument, missing required
        argument, malformed requisite.
    """
    data = doc.data
    if data is None:
        return [], []
    if not isinstance(data, dict):
        raise doc.error((), "a state file must map ids to states")
    includes: list[tuple[str, Path]] = []
    chunks: list[Chunk] = []
    for id_, body in data.items():
        if id_ == "include":
            includes = _includes(doc, body)
        elif not isinstance(id_, str):
            raise doc.error((str(id_),), f"id {id_!r} must be a string (quote it)")
        else:
            chunks.extend(_id_chunks(doc, sls, id_, body, registry))
    return includes, chunks


def _includes(doc: Document, body: Any) -> list[tuple[str, Path]]:
    if not isinstance(body, list) or not all(isinstance(name, str) for name in body):
        raise doc.error(("include",), "include: expected a list of state names")
    return [(name, ("include", index)) for index, name in enumerate(body)]


def _id_chunks(doc: Document, sls: str, id_: str, body: Any, registry: Registry) -> list[Chunk]:
    """The chunks under one id: one per ``module.function``, at most one per module."""
    if not isinstance(body, dict) or not body:
        raise doc.error((id_,), f"{id_}: expected a mapping of module.function to arguments")
    chunks: list[Chunk] = []
    seen: dict[str, str] = {}
    for state, args in body.items():
        here: Path = (id_, str(state))
        if not isinstance(state, str) or not _STATE_RE.fullmatch(state):
            raise doc.error(here, f"{id_}: {state!r}: expected module.function")
        module = state.partition(".")[0]
        if module in seen:
            raise doc.error(
                here,
                f"{id_}: {state}: {seen[module]} is already declared for this id "
                "(one function per module per id)",
            )
        seen[module] = state
        fn = _function(doc, here, state, registry)
        chunks.append(_chunk(doc, sls, id_, state, fn, _arguments(doc, here, args)))
    return chunks


def _function(doc: Document, here: Path, state: str, registry: Registry) -> StateFunction:
    prefix = f"{here[0]}: {state}"
    module, _, function = state.partition(".")
    functions = registry.get(module)
    if functions is None:
        known = ", ".join(sorted(registry)) or "none"
        raise doc.error(here, f"{prefix}: unknown state module {module!r} (known: {known})")
    fn = functions.get(function)
    if fn is None:
        known = ", ".join(sorted(functions)) or "none"
        raise doc.error(here, f"{prefix}: unknown function {function!r} (known: {known})")
    return fn


def _arguments(doc: Document, here: Path, args: Any) -> list[_Arg]:
    """Normalise both argument shapes to a list, refusing repeats."""
    prefix = f"{here[0]}: {here[1]}"
    found: list[_Arg] = []
    if args is None:
        return found
    if isinstance(args, dict):
        found = [_Arg(key, value, (*here, str(key))) for key, value in args.items()]
    elif isinstance(args, list):
        for index, item in enumerate(args):
            if not isinstance(item, dict) or len(item) != 1:
                raise doc.error(
                    (*here, index),
                    f"{prefix}: expected '- argument: value', got {type(item).__name__}",
                )
            ((key, value),) = item.items()
            found.append(_Arg(key, value, (*here, index, str(key))))
    else:
        raise doc.error(
            here, f"{prefix}: arguments must be a mapping or a list of '- argument: value'"
        )
    keys: set[str] = set()
    for arg in found:
        if not isinstance(arg.key, str):
            raise doc.error(arg.at, f"{prefix}: argument {arg.key!r} must be a string")
        if arg.key in keys:
            raise doc.error(arg.at, f"{prefix}: argument {arg.key!r} given twice")
        keys.add(arg.key)
    return found


def _chunk(
    doc: Document, sls: str, id_: str, state: str, fn: StateFunction, args: list[_Arg]
) -> Chunk:
    """Split reserved arguments (name, failhard, requisites) from the function's own."""
    prefix = f"{id_}: {state}"
    name, failhard = id_, False
    requisites: list[Requisite] = []
    kwargs: dict[str, _Arg] = {}
    for arg in args:
        if arg.key == "name":
            if not isinstance(arg.value, str) or not arg.value:
                raise doc.error(arg.at, f"{prefix}: name must be a non-empty string")
            name = arg.value
        elif arg.key == "failhard":
            if not isinstance(arg.value, bool):
                raise doc.error(arg.at, f"{prefix}: failhard must be true or false")
            failhard = arg.value
        elif arg.key in _REQUISITE_KEYS:
            requisites.extend(_requisites(doc, arg, prefix))
        elif arg.key == "python_shell":  # SaltStack's spelling of the same switch
            kwargs["shell"] = _Arg("shell", arg.value, arg.at)
        else:
            kwargs[arg.key] = arg
    _check_signature(doc, (id_, state), prefix, fn, kwargs)
    _check_shell(doc, (id_, state), prefix, fn, name, kwargs)
    module, _, function = state.partition(".")
    return Chunk(
        id=id_,
        module=module,
        function=function,
        name=name,
        kwargs={key: arg.value for key, arg in kwargs.items()},
        sls=sls,
        file=doc.file,
        line=doc.line((id_, state)),
        failhard=failhard,
        requisites=requisites,
    )


def _requisites(doc: Document, arg: _Arg, prefix: str) -> list[Requisite]:
    """``- require: [{file: /etc/x}, ...]`` (or a mapping ``{file: /etc/x}``)."""
    kind, reverse = _REQUISITE_KEYS[arg.key]
    shape = f"{prefix}: {arg.key}: expected a list of '- module: id'"
    pairs: list[tuple[Any, Any, Path]] = []
    if isinstance(arg.value, dict):
        pairs = [(m, t, (*arg.at, str(m))) for m, t in arg.value.items()]
    elif isinstance(arg.value, list):
        for index, item in enumerate(arg.value):
            if not isinstance(item, dict) or len(item) != 1:
                raise doc.error((*arg.at, index), shape)
            ((module, target),) = item.items()
            pairs.append((module, target, (*arg.at, index)))
    else:
        raise doc.error(arg.at, shape)
    found: list[Requisite] = []
    for module, target, at in pairs:
        if not isinstance(module, str) or not isinstance(target, str):
            raise doc.error(at, shape)
        found.append(
            Requisite(kind=kind, module=module, target=target, reverse=reverse, line=doc.line(at))
        )
    return found


def _check_signature(
    doc: Document, here: Path, prefix: str, fn: StateFunction, kwargs: Mapping[str, _Arg]
) -> None:
    """Arguments must be ones ``fn(ctx, name, ...)`` takes, and include all it requires."""
    try:
        params = list(inspect.signature(fn).parameters.values())[2:]
    except (TypeError, ValueError):
        return  # not introspectable; a bad argument then fails when the state runs
    known = [p.name for p in params if p.kind in _KEYWORD]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        for key, arg in kwargs.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise doc.error(arg.at, f"{prefix}: unknown argument {key!r}{hint}")
    missing = [
        p.name
        for p in params
        if p.kind in _KEYWORD and p.default is inspect.Parameter.empty and p.name not in kwargs
    ]
    if missing:
        raise doc.error(
            here, f"{prefix}: missing required argument {', '.join(map(repr, missing))}"
        )


def _check_shell(
    doc: Document, here: Path, prefix: str, fn: StateFunction, name: str, kwargs: Mapping[str, _Arg]
) -> None:
    """A function that runs commands without a shell unless ``shell: true`` refuses command
    strings (its name, ``unless``, ``onlyif``) that hold shell syntax: never a silent guess."""
    try:
        takes_shell = "shell" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    shell = kwargs.get("shell")
    if not takes_shell or (shell is not None and shell.value is True):
        return
    commands: list[tuple[str, Path]] = [(name, here)]
    for key in ("unless", "onlyif"):
        arg = kwargs.get(key)
        if arg is not None:
            values = arg.value if isinstance(arg.value, list) else [arg.value]
            commands += [(v, arg.at) for v in values if isinstance(v, str)]
    for command, at in commands:
        problem = refusal(command, prefix)
        if problem is not None:
            raise doc.error(at, problem)
