"""``saline-minion -c FILE``: the minion's own entry point, as a service manager runs it.

Kept apart from the ``saline`` click CLI (which can also run a minion) so that a minion
process loads nothing it does not use: every megabyte counts on every node.
"""

import argparse
import sys

from saline.config import CONFIG_ENV


def _import_asyncio_without_ssl() -> None:
    """Import asyncio while hiding ``ssl``: asyncio imports it eagerly (libssl, ~1 MB RSS),
    and the minion never speaks TLS through asyncio. ``ssl`` stays importable afterwards
    for jobs that need it (they run in forked children)."""
    if "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saline-minion", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-c",
        "--config",
        help=f"minion config (default: ${CONFIG_ENV}, else /etc/saline/minion.yaml)",
    )
    parser.add_argument("-l", "--log-level", help="override the config's log level")
    args = parser.parse_args(argv)
    _import_asyncio_without_ssl()

    from minion.config import load_minion_config
    from minion.daemon import run_minion
    from saline.errors import SalineError
    from saline.logs import setup_logging

    try:
        config, _ = load_minion_config(args.config)
        setup_logging(args.log_level or config.log_level, config.log_file, "saline-minion")
        run_minion(config)
    except SalineError as e:
        print(f"saline-minion: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
