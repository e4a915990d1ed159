"""The PostgreSQL server holding the store that a lab's masters share.

One real PostgreSQL 15 (started by the Chef HA lab's own ``pg`` helpers, as the
``postgres`` user when the lab runs as root) in ``DIR/store-pg``, listening on a free
loopback port, with one database, ``saline``. Its DSN, password included, is written to
``DIR/store.dsn`` with mode 0600 and named by every master's ``store:``; the lab's state
file records only where the server lives, never the password.
"""

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from saline.lab.chefha import pg
from saline.lab.chefha.state import ChefLabError

DATABASE = "saline"
SUPERUSER = "saline"  # what pg.init_leader creates


def service(directory: Path, port: int) -> dict[str, Any]:
    """Where the server of the lab in ``directory`` lives (the record ``start`` acts on)."""
    root = directory / "store-pg"
    return {
        "port": port,
        "data_dir": str(root / "data"),
        "sock_dir": str(root / "sock"),
        "log": str(root / "log" / "postgresql.log"),
        "dsn_file": str(directory / "store.dsn"),
    }


def dsn(port: int, password: str) -> str:
    return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"


def write_dsn(path: Path, text: str) -> None:
    """``text`` into ``path``, mode 0600 from the first byte (it holds a password)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def start(svc: dict[str, Any]) -> int:
    """A fresh server (whatever a previous lab left is wiped), its database and DSN file.

    :returns: the postmaster's pid.
    :raises ChefLabError: initdb, the start or the first queries failed (with stderr).
    """
    stop(svc)
    shutil.rmtree(Path(svc["data_dir"]).parent, ignore_errors=True)
    Path(svc["data_dir"]).parent.mkdir(parents=True)
    Path(svc["data_dir"]).parent.chmod(0o755)  # the postgres user goes through it
    keys = {"password": secrets.token_hex(16), "repl_password": secrets.token_hex(16)}
    pg.init_leader(svc, "127.0.0.1", "saline-store", keys)
    pg.query("127.0.0.1", svc, keys["password"], f"CREATE DATABASE {DATABASE}")
    write_dsn(Path(svc["dsn_file"]), dsn(svc["port"], keys["password"]))
    pid = pg.postmaster_pid(svc)
    if pid is None:
        raise ChefLabError(f"the store's PostgreSQL stopped at once; see {svc['log']}")
    return pid


def stop(svc: dict[str, Any]) -> None:
    """Stop the server if it runs (``pg_ctl stop -m fast``)."""
    if Path(svc["data_dir"]).is_dir():
        pg.stop(svc, "fast")


def running_pid(svc: dict[str, Any]) -> int | None:
    return pg.postmaster_pid(svc)
