"""Secrets kept in files: read only from a file no one but its owner may read."""

import stat
from pathlib import Path

from saline.errors import ConfigError


def read_private_file(path: Path, what: str, kind: str = "secret file") -> str:
    """The stripped content of ``path``, which must not be open to group or others.

    :raises ConfigError: ``WHAT: ...`` when it is missing, unreadable, too open, or empty.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read the {kind} {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what}: the {kind} {path} is open to others (mode {stat.S_IMODE(mode):04o}):"
            f" chmod 600 {path}"
        )
    if not text:
        raise ConfigError(f"{what}: the {kind} {path} is empty")
    return text
