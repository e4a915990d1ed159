"""Pillar: per-minion data compiled from ``pillar_roots`` (on the master for its minions;
on the node itself for ``saline call --local``). Pure: files in, data out.

``top.yaml`` in the pillar root maps compound targets to pillar files (``a.b`` ->
``a/b.yaml`` or ``a/b/init.yaml``); the files are Jinja-rendered, parsed, and
deep-merged in top-file order. Targets and templates see only the id and grains the
caller passes: on the master, the authenticated id, nodegroups (``N@name``) and the
*trusted* grains (``master.trust``), never the grains a minion claims. A value tagged
``!secret`` is a secret: it reaches only the minions whose pillar holds it, and the minion
masks it in returns, logs and diffs::

    chef:
      backend_secrets: !secret '{"postgresql": {"db_superuser_password": "..."}}'
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from saline.errors import SalineError, TargetError
from saline.targeting import compile_target
from saline.templating import FILE_TEMPLATES, render


class PillarError(SalineError):
    """A pillar file or top file could not be compiled (message names the file)."""


class _SecretLoader(yaml.SafeLoader):
    """SafeLoader that records every ``!secret`` value it constructs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.secrets: list[str] = []


def _secret(loader: _SecretLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    loader.secrets.append(str(value))
    return value


_SecretLoader.add_constructor("!secret", _secret)


def _load(text: str, name: str) -> tuple[Any, list[str]]:
    loader = _SecretLoader(text)
    try:
        return loader.get_single_data(), loader.secrets
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise PillarError(f"pillar {name}{line}: invalid YAML: {getattr(e, 'problem', e)}") from e
    finally:
        loader.dispose()


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


class PillarCompiler:
    def __init__(self, roots: list[Path], nodegroups: Mapping[str, str] | None = None) -> None:
        self.roots = roots
        self.nodegroups = dict(nodegroups or {})

    def _expand(self, target: str) -> str:
        """``N@name`` terms replaced by their nodegroup's compound, in parentheses."""
        words = []
        for word in target.split():
            head = word.rstrip(")")
            opening = head[: len(head) - len(head.lstrip("("))]
            term = head[len(opening) :]
            if term.startswith("N@"):
                group = self.nodegroups.get(term[2:])
                if group is None:
                    raise PillarError(f"pillar top.yaml: unknown nodegroup {term[2:]!r}")
                word = f"{opening}( {group} ){word[len(head) :]}"
            words.append(word)
        return " ".join(words)

    def _read(self, relative: str) -> tuple[str, str] | None:
        for root in self.roots:
            path = root / relative
            if path.is_file():
                return path.read_text(), relative
        return None

    def _file_of(self, name: str) -> tuple[str, str]:
        if ".." in name or name.startswith("/"):
            raise PillarError(f"refused pillar name {name!r}")
        base = name.replace(".", "/")
        for relative in (f"{base}.yaml", f"{base}/init.yaml"):
            found = self._read(relative)
            if found is not None:
                return found
        raise PillarError(f"pillar {name!r} not found ({base}.yaml or {base}/init.yaml)")

    def names_for(self, minion_id: str, grains: Mapping[str, Any]) -> list[str]:
        """Pillar names the top file assigns to this minion, in order, without repeats."""
        found = self._read("top.yaml")
        if found is None:
            return []
        top, _ = _load(found[0], "top.yaml")
        if isinstance(top, dict) and set(top) == {"base"}:
            top = top["base"]
        if not isinstance(top, dict):
            raise PillarError("pillar top.yaml: expected a mapping of targets to pillar names")
        names: list[str] = []
        for target, assigned in top.items():
            try:
                expanded = self._expand(str(target))
                matched = compile_target(expanded, "compound").matches(minion_id, grains)
            except TargetError as e:
                raise PillarError(f"pillar top.yaml: target {target!r}: {e}") from e
            if matched:
                for name in assigned if isinstance(assigned, list) else [assigned]:
                    if str(name) not in names:
                        names.append(str(name))
        return names

    def compile(self, minion_id: str, grains: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """This minion's pillar and its secret values. Only ever called for the id the
        minion authenticated as (a minion cannot ask for another's pillar), with the grains
        the master trusts for it."""
        pillar: dict[str, Any] = {}
        secrets: set[str] = set()
        for name in self.names_for(minion_id, grains):
            text, relative = self._file_of(name)
            rendered = render(
                text,
                name=f"pillar/{relative}",
                context={"grains": grains, "minion_id": minion_id},
                env=FILE_TEMPLATES,
                error=PillarError,
            )
            data, found = _load(rendered, relative)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise PillarError(f"pillar {relative}: expected a mapping")
            deep_merge(pillar, data)
            secrets.update(found)
        return pillar, secrets
