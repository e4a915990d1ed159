"""Start many lab minions fast: import the minion once, then fork one process per minion.

Thirty interpreters each importing pyzmq and pydantic cost ~0.4 s of CPU apiece on a
2-core machine; forking a process that has already imported them costs a few ms. Each
child is a complete, independent ``saline minion`` (own session, pid, config, key, socket,
log); only the import work is shared. Usage::

    python -m saline.lab.launcher MINION_YAML LOG_FILE [MINION_YAML LOG_FILE ...]

prints ``{"<config path>": pid, ...}`` as JSON on stdout and exits; the minions go on.
"""

import json
import os
import sys


def _child(config_path: str, log_path: str) -> None:
    """Body of one forked minion; never returns."""
    code = 0
    try:
        os.setsid()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.argv = ["saline-minion", "-c", config_path]
        from minion.__main__ import main

        code = main(["-c", config_path])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch(pairs: list[tuple[str, str]]) -> dict[str, int]:
    # everything a minion imports, imported once before forking (no threads exist yet)
    from minion.__main__ import _import_without_openssl

    _import_without_openssl()
    import minion.daemon  # noqa: F401

    pids: dict[str, int] = {}
    for config_path, log_path in pairs:
        pid = os.fork()
        if pid == 0:
            _child(config_path, log_path)
        pids[config_path] = pid
    return pids


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print("usage: launcher MINION_YAML LOG_FILE [...]", file=sys.stderr)
        return 2
    pairs = list(zip(argv[::2], argv[1::2], strict=True))
    print(json.dumps(launch(pairs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
