"""Which returner a ``kind`` names: the built-in ones, then ``saline.returners`` entry
points — each a callable ``(name, settings) -> Returner`` (``master/returners/base.py``)."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from master.returners.base import Returner
from master.returners.config import ReturnerConfig
from saline.errors import ConfigError
from saline.plugins import load_entry_points
from saline.private_file import read_private_file

Factory = Callable[[str, Mapping[str, Any]], Returner]


def _secret(value: str | None, what: str) -> str | None:
    if value is None or not value.startswith("/"):
        return value
    return read_private_file(Path(value), what)


class _EsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hosts: list[str] = Field(min_length=1)
    index_prefix: str = Field(default="saline", pattern=r"^[a-z0-9][a-z0-9_.-]{0,60}$")
    timeout: float = Field(default=10.0, gt=0, le=300)
    username: str | None = None
    #: inline, or the path of a 0600 file
    password: str | None = None
    ca_certs: str | None = None


class _PgSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: postgresql://... inline, or the path of a 0600 file holding it
    dsn: str = Field(min_length=1)
    table_prefix: str = Field(default="saline", pattern=r"^[a-z_][a-z0-9_]{0,40}$")


def _elasticsearch(name: str, settings: Mapping[str, Any]) -> Returner:
    from master.returners.elasticsearch import ElasticsearchReturner

    s = _EsSettings.model_validate(settings)
    password = _secret(s.password, f"returner {name}'s password")
    return ElasticsearchReturner(
        name, s.hosts, s.index_prefix, s.timeout, s.username, password, s.ca_certs
    )


def _postgresql(name: str, settings: Mapping[str, Any]) -> Returner:
    from master.returners.postgresql import PostgresReturner

    s = _PgSettings.model_validate(settings)
    dsn = _secret(s.dsn, f"returner {name}'s dsn") or ""
    return PostgresReturner(name, dsn, s.table_prefix)


BUILTINS: dict[str, Factory] = {"elasticsearch": _elasticsearch, "postgresql": _postgresql}


def _vet(name: str, obj: object) -> str | None:
    return None if callable(obj) else "not callable: a returner factory (name, settings)"


def build(config: ReturnerConfig, factories: Mapping[str, Factory] | None = None) -> Returner:
    """The returner ``config`` describes. :raises ConfigError: unknown kind, bad settings."""
    table = factories if factories is not None else factories_found()
    factory = table.get(config.kind)
    if factory is None:
        known = ", ".join(sorted(table))
        raise ConfigError(f"returner {config.name}: unknown kind {config.kind!r} (known: {known})")
    try:
        return factory(config.name, config.settings())
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigError(f"returner {config.name}: {field}: {err['msg']}") from None
    except ValueError as e:
        raise ConfigError(f"returner {config.name}: {e}") from None


def factories_found() -> dict[str, Factory]:
    return load_entry_points("saline.returners", BUILTINS, _vet, ConfigError)
