"""Load state files into chunks: find, render, parse, validate, expand includes.

``chef_backend.secrets`` is ``saline://chef_backend/secrets.yaml``, else
``saline://chef_backend/secrets/init.yaml``. Each file is rendered with Jinja (``grains``,
``pillar``, ``minion_id`` and ``saline['mod.fun'](...)`` for execution functions), parsed
as YAML keeping line numbers, and validated against the registry of state functions.
Every error is a :class:`StateError` naming ``file:line`` (lines of the rendered text,
which match the source unless the template adds or removes lines).
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saline.errors import StateError, TargetError
from saline.targeting import compile_target
from states.declarations import Document, Path, parse_declarations, parse_yaml
from states.model import Chunk, Registry
from states.modules.base import CallFunction, FileSource
from states.render import render_jinja

__all__ = ["TOP_FILE", "StateLoader"]

SCHEME = "saline://"
#: the highstate's top file, relative to ``saline://``
TOP_FILE = "top.yaml"

# Dots separate directories; anything else that could climb out of the tree is refused
# here rather than trusted to every FileSource.
_NAME_RE = re.compile(r"[\w-]+(\.[\w-]+)*")


@dataclass
class _Tree:
    """What :meth:`StateLoader.load` has gathered so far."""

    chunks: list[Chunk] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    #: id -> the first chunk declaring it, to name both files of a duplicate
    ids: dict[str, Chunk] = field(default_factory=dict)


class _ExecFunctions:
    """``saline['mod.fun'](...)`` in templates: execution functions run through ``call``."""

    def __init__(self, call: CallFunction, file: str) -> None:
        self._call = call
        self._file = file

    def __getitem__(self, fun: str) -> Callable[..., Any]:
        def invoke(*args: Any, **kwargs: Any) -> Any:
            try:
                return self._call(fun, *args, **kwargs)
            except Exception as e:  # translated at the edge: rendering raises StateError only
                raise StateError(f"{self._file}: saline[{fun!r}] failed: {e}") from e

        return invoke


class StateLoader:
    """Loads state files for one minion; all inputs are explicit, nothing is global."""

    def __init__(
        self,
        *,
        files: FileSource,
        registry: Registry,
        minion_id: str,
        grains: Mapping[str, Any],
        pillar: Mapping[str, Any],
        call: CallFunction,
    ) -> None:
        self._files = files
        self._registry = registry
        self._minion_id = minion_id
        self._grains = grains
        self._pillar = pillar
        self._call = call

    def top_names(self) -> list[str]:
        """State names for this minion from ``saline://top.yaml``, in file order, deduplicated.

        The top file maps compound targets to lists of state names, optionally under a
        ``base:`` key. An empty top file, or one matching nothing, gives ``[]``.

        :raises StateError: the top file is missing, unparsable or malformed.
        """
        doc = self._document(TOP_FILE, self._files.get(SCHEME + TOP_FILE))
        data = doc.data
        at: Path = ()
        if data is None:
            return []
        if isinstance(data, dict) and list(data) == ["base"] and isinstance(data["base"], dict):
            data, at = data["base"], ("base",)
        if not isinstance(data, dict):
            raise doc.error(at, "the top file must map targets to lists of state names")
        names: dict[str, None] = {}
        for target, states in data.items():
            here: Path = (*at, str(target))
            if not isinstance(target, str):
                raise doc.error(here, f"target {target!r} must be a string")
            try:
                matcher = compile_target(target, "compound")
            except TargetError as e:
                raise doc.error(here, f"target {target!r}: {e}") from e
            if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
                raise doc.error(here, f"target {target!r}: expected a list of state names")
            if matcher.matches(self._minion_id, self._grains):
                names.update(dict.fromkeys(states))
        return list(names)

    def load(self, names: Sequence[str]) -> list[Chunk]:
        """Chunks of ``names`` and their includes, in declaration order, not yet ordered.

        Included files come before the file including them; each file is loaded once, so
        include cycles are harmless. Ids must be unique across everything loaded.

        :raises StateError: a file is missing, fails to render/parse/validate, or an id
            is declared twice (names both places).
        """
        tree = _Tree()
        for name in dict.fromkeys(names):
            self._load(name, tree, origin=None)
        return tree.chunks

    def _load(self, name: str, tree: _Tree, origin: str | None) -> None:
        """Load ``name`` into ``tree``; ``origin`` (``file:line``) is where it was included."""
        if name in tree.loaded:
            return
        tree.loaded.add(name)
        file, raw = self._find(name, origin)
        doc = self._document(file, raw)
        includes, chunks = parse_declarations(doc, name, self._registry)
        for include, at in includes:
            target = _absolute(include, name, file.endswith("/init.yaml"))
            if target is None:
                raise doc.error(at, f"include {include!r}: goes above the top of the tree")
            self._load(target, tree, origin=f"{file}:{doc.line(at)}")
        for chunk in chunks:
            first = tree.ids.get(chunk.id)
            if first is not None and first.sls != chunk.sls:
                raise StateError(
                    f"{chunk.where}: duplicate id {chunk.id!r} (also declared at {first.where})"
                )
            tree.ids.setdefault(chunk.id, chunk)
            tree.chunks.append(chunk)

    def _find(self, name: str, origin: str | None) -> tuple[str, bytes]:
        """The file of state ``name`` (relative to ``saline://``) and its content."""
        where = f"{origin}: include {name!r}" if origin else f"state {name!r}"
        if not _NAME_RE.fullmatch(name):
            raise StateError(f"{where}: not a valid state name (dotted words)")
        candidates = state_files(name)
        for file in candidates:
            try:
                return file, self._files.get(SCHEME + file)
            except StateError:
                continue  # FileSource signals "missing" this way; try the next layout
        first, second = (SCHEME + f for f in candidates)
        raise StateError(f"{where}: neither {first} nor {second} exists")

    def _document(self, file: str, raw: bytes) -> Document:
        """Render ``raw`` with Jinja and parse it as YAML, keeping line numbers."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StateError(f"{file}: not UTF-8 text: {e}") from e
        context = {
            "grains": self._grains,
            "pillar": self._pillar,
            "minion_id": self._minion_id,
            "saline": _ExecFunctions(self._call, file),
        }
        return parse_yaml(render_jinja(text, name=file, context=context), file)


def state_files(name: str) -> tuple[str, ...]:
    """The files (relative to ``saline://``) state ``name`` may live in, in lookup order."""
    base = name.replace(".", "/")
    return (f"{base}.yaml", f"{base}/init.yaml")


def _absolute(include: str, sls: str, is_init: bool) -> str | None:
    """Resolve a relative include (``.sibling``, ``..uncle``) against state ``sls``.

    A file ``a/b.yaml`` (state ``a.b``) lives in package ``a``; ``a/b/init.yaml`` (also
    ``a.b``) in package ``a.b``. Returns None when the dots climb above the top.
    """
    if not include.startswith("."):
        return include
    dots = len(include) - len(include.lstrip("."))
    package = sls.split(".") if is_init else sls.split(".")[:-1]
    if dots - 1 > len(package):
        return None
    base = package[: len(package) - (dots - 1)]
    return ".".join([*base, include[dots:]])
