"""``saline-minion -c FILE``: the minion's own entry point, as a service manager runs it.

Kept apart from the ``saline`` click CLI (which can also run a minion) so that a minion
process loads nothing it does not use: every megabyte counts on every node.
"""

import argparse
import sys

from saline.config import CONFIG_ENV
from saline.logs import LOG_FORMATS, LOG_LEVELS


def _import_without_openssl() -> None:
    """Import asyncio and hashlib without OpenSSL: asyncio imports ``ssl`` eagerly (libssl,
    ~1 MB RSS) and hashlib ``_hashlib`` (libcrypto, ~3.4 MB RSS), though the minion never
    speaks TLS through asyncio and needs only SHA-256, which CPython implements itself.
    Both stay importable afterwards for jobs that need them (jobs run in forked children);
    hashlib keeps its built-in implementations."""
    hidden = [name for name in ("ssl", "_hashlib") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
        import hashlib  # noqa: F401
        import hmac  # noqa: F401  (pydantic imports it through secrets)
    finally:
        for name in hidden:
            del sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saline-minion", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-c",
        "--config",
        help=f"minion config (default: ${CONFIG_ENV}, else /etc/saline/minion.yaml)",
    )
    parser.add_argument(
        "-l", "--log-level", choices=LOG_LEVELS, help="override the config's log level"
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines as text (default), or one JSON object per line",
    )
    args = parser.parse_args(argv)
    _import_without_openssl()

    from minion.config import apply_env, load_minion_config
    from minion.daemon import run_minion
    from minion.grains import minion_id
    from saline.errors import SalineError
    from saline.logs import set_process_title, setup_logging

    try:
        config, path = load_minion_config(args.config)
        # first thing after loading: beacons, jobs and their commands read os.environ
        apply_env(config)
        level = args.log_level or config.log_level
        setup_logging(level, config.log_file, "saline-minion", args.log_format)
        # `ps` tells the minions apart: saline-minion be1 -c /etc/saline/minion.yaml
        set_process_title("saline-minion", minion_id(config), "-c", str(path))
        run_minion(config, path, log_level_fixed=bool(args.log_level))
    except SalineError as e:
        print(f"saline-minion: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
