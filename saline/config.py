"""YAML configuration loading: pydantic validation with errors naming file, line and field."""

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from saline.errors import ConfigError, SalineError

if TYPE_CHECKING:  # pydantic is imported only when validating: the CLI stays light
    from pydantic import BaseModel

C = TypeVar("C", bound="BaseModel")

#: environment variable naming the config file when -c is not given
CONFIG_ENV = "SALINE_CONFIG"


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                break
            line = (key or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_yaml(
    text: str, label: str, error: type[SalineError] = ConfigError
) -> tuple[yaml.Node | None, Any]:
    """The node tree (for error lines, see ``line_of``) and the data of YAML ``text``.

    :raises error: ``label:line: invalid YAML: problem``.
    """
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise error(f"{label}{line}: invalid YAML: {getattr(e, 'problem', e)}") from e


def load_yaml_model(
    path: Path,
    model: type[C],
    overrides: dict[str, Any] | None = None,
    foreign: tuple[str, frozenset[str]] | None = None,
) -> C:
    """Read ``path`` as YAML and validate it as ``model``.

    ``foreign`` is (what the other kind of file is called, settings only it has): a file
    setting those is named for what it is ("this is a minion config") instead of a list
    of unknown settings. An unknown setting gets a "did you mean".

    :raises ConfigError: with ``file:line: field: message`` for the first problem found.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    node, data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of settings")
    if foreign is not None:
        kind, keys = foreign
        theirs = sorted(k for k in data if k in keys and k not in model.model_fields)
        if theirs:
            raise ConfigError(
                f"{path}: this looks like {kind} (it sets {', '.join(theirs)}), not the"
                f" {model.__name__} this command reads"
            )
    data.update(overrides or {})
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        line_no = line_of(node, loc)
        field = ".".join(str(p) for p in loc) or "(top)"
        where = f"{path}:{line_no}" if line_no else str(path)
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        hint = ""
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            close = difflib.get_close_matches(str(loc[0]), list(model.model_fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: {field}: {err['msg']}{hint}{more}") from e


def read_setting(path: Path, key: str, default: str) -> str:
    """One string setting from a YAML mapping, without validating the rest of the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    value = data.get(key, default) if isinstance(data, dict) else default
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key}: expected a path, got {type(value).__name__}")
    return value


def resolve_config_path(given: str | None, default: str) -> Path:
    """-c wins, then $SALINE_CONFIG, then the packaged default location."""
    return Path(given or os.environ.get(CONFIG_ENV) or default)
