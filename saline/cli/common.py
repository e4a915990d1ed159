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


#: SaltStack's target shortcuts: -C compound, -G grain, -L list, -E regex on the id
_SHORTCUTS = (("-C", "compound"), ("-G", "grain"), ("-L", "list"), ("-E", "pcre"))


def target_shortcuts(fn: Any) -> Any:
    """Add -C/-G/-L/-E (as in ``salt -C 'G@role:backend and not be3'``) to a command."""
    for flag, kind in reversed(_SHORTCUTS):
        help_text = "TARGET is a regex on the id" if kind == "pcre" else f"same as -T {kind}"
        fn = click.option(flag, "shortcut", flag_value=kind, default=None, help=help_text)(fn)
    return fn


def resolve_target(target: str, tgt_type: str, shortcut: str | None) -> tuple[str, str]:
    """(target, type) from ``-T`` and a shortcut flag; both at once is a usage error."""
    if shortcut is None:
        return target, tgt_type
    if tgt_type != "glob":
        raise click.UsageError(f"give -T {tgt_type} or a shortcut flag, not both")
    if shortcut == "pcre":
        return f"E@{target}", "compound"
    return target, shortcut


class BatchSize(click.ParamType):  # type: ignore[type-arg]
    """``--batch N`` or ``--batch N%`` (SaltStack's spellings)."""

    name = "N|N%"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        text = str(value).strip()
        if text.endswith("%") and text[:-1].isdigit() and 1 <= int(text[:-1]) <= 100:
            return f"{int(text[:-1])}%"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r}: give a count (2) or a share of the minions (25%)", param, ctx)


BATCH = BatchSize()
