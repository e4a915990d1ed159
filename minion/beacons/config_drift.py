"""The ``config_drift`` beacon: chef-backend.rb settings that must be identical on all backends.

Chef Backend requires some settings (``postgresql.md5_auth_cidr_addresses`` above all) to be
the same on every node of the cluster. This beacon reads them from the node's
``/etc/chef-backend/chef-backend.rb``, checks them against ``expected`` values when given,
and publishes them with a digest so that the master can compare the backends.

The file is Ruby, but the lines of interest are literal assignments, so they are parsed as
data, never evaluated: ``key = value`` or ``key value``, where ``key`` is dotted
(``postgresql.md5_auth_cidr_addresses``) and ``value`` is a quoted string, a number,
``true``/``false`` or a ``[...]`` list of those (which may span lines); a trailing ``#``
comment is allowed. Comments, ``=begin``/``=end`` blocks and every other line are ignored,
and so is the Ruby control flow around an assignment. As in Ruby, the last assignment of a
key wins. A watched key whose value is anything else (a method call, interpolation...) makes
the file ``unparsable``.

Params:
  ``path``: the file (required, absolute); ``keys``: the dotted settings to watch (default
  ``["postgresql.md5_auth_cidr_addresses"]``); ``expected``: optional mapping of watched
  key -> required value (a key absent from the file has the value null).

States (one observation keyed by ``path``):
  ``ok``, ``drifted`` (bad: a watched setting differs from ``expected``), ``missing`` (bad:
  no file), ``unparsable`` (bad: the file cannot be read, or a watched value is not a
  literal), ``changed`` (bad, one-off: the settings differ from the previous check's while
  the state stays ``ok`` or ``drifted``, so the master sees the new digest; the next check
  reports the state again). The first check records the baseline.

Data: ``path``, ``settings`` (every watched key -> its parsed value, null when unset or
unparsable), ``digest`` (sha256 hex of the canonical JSON of ``settings``: sorted keys, no
whitespace, UTF-8); for ``drifted`` (and a ``changed`` while drifted) ``differences``, a
list of ``{key, expected, actual}``; for ``unparsable``, ``error``; for ``changed`` also
``previous_settings`` and ``previous_digest``.

Example::

    beacons:
      config_drift:
        path: /etc/chef-backend/chef-backend.rb
        expected: {postgresql.md5_auth_cidr_addresses: [samehost, samenet, 127.0.1.0/24]}
        interval: 60
        announce: true
"""

import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from minion.beacons.base import Beacon, BeaconConfig, BeaconContext, Observation

DEFAULT_PATH = "/etc/chef-backend/chef-backend.rb"
DEFAULT_KEYS = ("postgresql.md5_auth_cidr_addresses",)
#: a dotted setting name, as chef-backend.rb writes them
KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"

#: the values this beacon understands: literals only
Scalar = str | bool | int | float
Value = Scalar | list[Scalar]

#: an assignment line: ``key = value`` or ``key value`` (a Ruby method call)
_SETTING = re.compile(rf"^\s*(?P<key>{KEY_PATTERN})(?:\s*=\s*|\s+)(?P<value>\S.*)$")
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#.*)
    | (?P<single>'(?:[^'\\]|\\.)*')
    | (?P<double>"(?:[^"\\]|\\.)*")
    | (?P<number>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<word>[A-Za-z_]\w*[?!]?)
    | (?P<punct>[\[\],])
    """,
    re.VERBOSE,
)
#: escapes of a double-quoted Ruby string that we decode; any other is refused
_DOUBLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "s": " "}
_NOT_LITERAL = "expected a quoted string, a number, true/false or a [...] list of those"


class ConfigDriftBeaconConfig(BeaconConfig):
    #: the chef-backend.rb file
    path: str
    #: dotted settings to watch
    keys: list[Annotated[str, StringConstraints(pattern=rf"^{KEY_PATTERN}$")]] = Field(
        default_factory=lambda: list(DEFAULT_KEYS), min_length=1
    )
    #: watched key -> the value it must have (null: must be unset)
    expected: dict[str, Value | None] | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not os.path.isabs(path):
            raise ValueError(f"{path!r} is not an absolute path")
        return path

    @model_validator(mode="after")
    def _expected_are_watched(self) -> "ConfigDriftBeaconConfig":
        unwatched = sorted(set(self.expected or {}) - set(self.keys))
        if unwatched:
            raise ValueError(f"expected names keys that are not in keys: {', '.join(unwatched)}")
        return self


def digest(settings: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``settings`` (what the master compares)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each meaningful token; spaces and comments are skipped.

    :raises ValueError: at a character that starts no token (an unterminated string...).
    """
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"not a literal at {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            yield kind, match.group()
        pos = match.end()


def _unquote(kind: str, token: str) -> str:
    body, out, i = token[1:-1], [], 0
    if kind == "double" and "#{" in body:
        raise ValueError(f"{token}: string interpolation is not a literal")
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
        elif kind == "single":
            # Ruby's single quotes: only \\ and \' are escapes, other backslashes stay
            nxt = body[i + 1]
            out.append(nxt if nxt in "\\'" else "\\" + nxt)
        elif body[i + 1] in _DOUBLE_ESCAPES:
            out.append(_DOUBLE_ESCAPES[body[i + 1]])
        else:
            raise ValueError(f"{token}: unsupported escape \\{body[i + 1]}")
        i += 1 if char != "\\" else 2
    return "".join(out)


def _scalar(kind: str, lexeme: str) -> Scalar:
    if kind in ("single", "double"):
        return _unquote(kind, lexeme)
    if kind == "number":
        return float(lexeme) if any(c in lexeme for c in ".eE") else int(lexeme)
    if kind == "word" and lexeme in ("true", "false"):
        return lexeme == "true"
    raise ValueError(f"{_NOT_LITERAL}, got {lexeme!r}")


def parse_value(text: str) -> Value:
    """The literal written in ``text`` (after ``=``, a trailing comment allowed).

    :raises ValueError: ``text`` is not one literal (saying why).
    """
    tokens = list(_tokens(text))
    if not tokens:
        raise ValueError("no value")
    value: Value
    if tokens[0] == ("punct", "["):
        items: list[Scalar] = []
        i = 1
        while i < len(tokens) and tokens[i] != ("punct", "]"):
            items.append(_scalar(*tokens[i]))
            i += 1
            if i < len(tokens) and tokens[i] == ("punct", ","):
                i += 1
            elif i < len(tokens) and tokens[i] != ("punct", "]"):
                raise ValueError(f"expected ',' or ']' in the list, got {tokens[i][1]!r}")
        if i == len(tokens):
            raise ValueError("unterminated list")
        value, rest = items, tokens[i + 1 :]
    else:
        value, rest = _scalar(*tokens[0]), tokens[1:]
    if rest:
        raise ValueError(f"unexpected {rest[0][1]!r} after the value")
    return value


def _open_list(text: str) -> bool:
    """Whether ``text`` leaves a ``[`` open (the list goes on next line)."""
    try:
        tokens = list(_tokens(text))
    except ValueError:
        return False  # parse_value reports it
    return sum(t == ("punct", "[") for t in tokens) > sum(t == ("punct", "]") for t in tokens)


def read_settings(text: str, keys: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The values of ``keys`` assigned in ``text`` (None when unset or unparsable), and one
    error per unparsable watched key (``line N: key: why``)."""
    raw: dict[str, tuple[int, str]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if line.startswith("=begin"):  # a Ruby block comment runs to "=end"
            while i < len(lines) and not lines[i].startswith("=end"):
                i += 1
            i += 1
            continue
        match = _SETTING.match(line)
        if match is None or match["key"] not in keys:
            continue
        value = match["value"]
        while _open_list(value) and i < len(lines):
            value += "\n" + lines[i]
            i += 1
        raw[match["key"]] = (number, value)  # the last assignment wins, as in Ruby
    settings: dict[str, Any] = dict.fromkeys(keys)
    errors: list[str] = []
    for key, (number, value) in sorted(raw.items(), key=lambda item: item[1][0]):
        try:
            settings[key] = parse_value(value)
        except ValueError as exc:
            errors.append(f"line {number}: {key}: {exc}")
    return settings, errors


def _canonical(value: Any) -> str:
    # compared as JSON, so that true differs from 1 and 1 from 1.0, as they do in Ruby
    return json.dumps(value, sort_keys=True)


class ConfigDriftBeacon(Beacon):
    """Watch settings of chef-backend.rb: ok, drifted, missing, unparsable, or changed."""

    name = "config_drift"
    bad_states = ("drifted", "missing", "unparsable", "changed")
    Config = ConfigDriftBeaconConfig
    config: ConfigDriftBeaconConfig

    def __init__(self, config: BeaconConfig, ctx: BeaconContext) -> None:
        super().__init__(config, ctx)
        #: the previous check's state and data, to tell a settings change within one state
        self._previous: tuple[str, dict[str, Any]] | None = None

    def check(self) -> list[Observation]:
        state, data = self._observe()
        before, self._previous = self._previous, (state, data)
        if (
            before is not None
            and before[0] == state
            and state in ("ok", "drifted")
            and before[1]["digest"] != data["digest"]
        ):
            data = {
                **data,
                "previous_settings": before[1]["settings"],
                "previous_digest": before[1]["digest"],
            }
            return [Observation(self.config.path, "changed", bad=True, data=data, transient=True)]
        return [Observation(self.config.path, state, bad=state != "ok", data=data)]

    def _observe(self) -> tuple[str, dict[str, Any]]:
        """This check's state and data (before comparing with the previous check)."""
        cfg = self.config
        unset: dict[str, Any] = dict.fromkeys(cfg.keys)
        try:
            with open(cfg.path, "rb") as handle:
                # undecodable bytes elsewhere in the file must not hide the watched settings
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "missing", self._data(unset)
        except OSError as exc:
            return "unparsable", self._data(unset, error=f"cannot read: {exc.strerror or exc}")
        settings, errors = read_settings(text, cfg.keys)
        if errors:
            return "unparsable", self._data(settings, error="; ".join(errors))
        differences = [
            {"key": key, "expected": want, "actual": settings[key]}
            for key, want in (cfg.expected or {}).items()
            if _canonical(want) != _canonical(settings[key])
        ]
        if differences:
            return "drifted", self._data(settings, differences=differences)
        return "ok", self._data(settings)

    def _data(self, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"path": self.config.path, "settings": settings, "digest": digest(settings), **extra}
