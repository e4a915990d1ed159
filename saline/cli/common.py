"""Helpers shared by CLI commands: config resolution, the master client, output formats."""

import json
from pathlib import Path
from typing import Any

import click


def obj(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root()
    value: dict[str, Any] = root.obj or {}
    return value


def master_config(ctx: click.Context) -> Any:
    """The master config named by -c / $SALINE_CONFIG (the CLI talks to that master)."""
    from master.config import load_master_config

    config, _ = load_master_config(obj(ctx).get("config_path"))
    return config


def client(ctx: click.Context, timeout: float | None = 10.0) -> Any:
    """A connection to the master's client socket. Only ``sock_dir`` is read from the config
    (validating all of it would add ~0.1 s to every command; the master validates it)."""
    from saline.api import DEFAULT_MASTER_CONFIG, DEFAULT_SOCK_DIR, SOCKET_NAME
    from saline.client import MasterClient
    from saline.config import read_setting, resolve_config_path

    path = resolve_config_path(obj(ctx).get("config_path"), DEFAULT_MASTER_CONFIG)
    sock_dir = read_setting(path, "sock_dir", DEFAULT_SOCK_DIR)
    return MasterClient(Path(sock_dir) / SOCKET_NAME, timeout=timeout)


def dump(value: Any, out: str) -> str:
    if out == "json":
        return json.dumps(value, indent=2, sort_keys=True, default=_jsonable)
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        # command output reads as it was printed: multi-line strings as literal blocks
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    dumped = yaml.dump(_plain(value), Dumper=Dumper, sort_keys=True, default_flow_style=False)
    return str(dumped).rstrip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


OUT_CHOICE = click.Choice(["human", "json", "yaml"])
