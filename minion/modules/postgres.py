"""postgres.*: streaming replication state of one PostgreSQL node, leader or follower.

``postgres.replication`` connects over TCP with psycopg2 (imported inside the function: the
minion does not load it at start) and reports, on a leader, one row per connected follower
from ``pg_stat_replication`` (a follower that is down has no row) with its byte lag
``pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)``; on a follower, the receive/replay
positions, whether replay is paused, the WAL receiver (``None`` = not connected) and plain
sentences describing what is wrong. The password is never logged nor returned.
"""

from datetime import datetime
from typing import Any

from minion.modules.base import Context
from saline.errors import ExecutionError
from saline.masking import Masker

DEFAULT_LAG_BYTES = 50 * 1024 * 1024

_LEADER_SQL = """
SELECT application_name, host(client_addr), state, sent_lsn::text, replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, reply_time
FROM pg_stat_replication
ORDER BY application_name, client_addr
"""

_FOLLOWER_SQL = """
SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       pg_get_wal_replay_pause_state(),
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
"""

_RECEIVER_SQL = """
SELECT status, last_msg_receipt_time, sender_host, sender_port FROM pg_stat_wal_receiver
"""


def _iso(value: Any) -> str | None:
    """Timestamps as ISO 8601 strings (msgpack-able); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _leader(cur: Any) -> dict[str, Any]:
    cur.execute(_LEADER_SQL)
    followers = [
        {
            "application_name": row[0],
            "client_addr": row[1],
            "state": row[2],
            "sent_lsn": row[3],
            "replay_lsn": row[4],
            "lag_bytes": None if row[5] is None else int(row[5]),
            "reply_time": _iso(row[6]),
        }
        for row in cur.fetchall()
    ]
    return {"role": "leader", "followers": followers}


def _follower(cur: Any, lag_limit: int) -> dict[str, Any]:
    cur.execute(_FOLLOWER_SQL)
    receive_lsn, replay_lsn, pause_state, lag = cur.fetchone()
    cur.execute(_RECEIVER_SQL)
    row = cur.fetchone()
    receiver = (
        None
        if row is None
        else {
            "status": row[0],
            "last_msg_receipt_time": _iso(row[1]),
            "sender_host": row[2],
            "sender_port": row[3],
        }
    )
    lag_bytes = None if lag is None else int(lag)
    paused = pause_state != "not paused"
    problems: list[str] = []
    if receiver is None:
        problems.append("The WAL receiver is not running: the follower is not connected.")
    elif receiver["status"] != "streaming":
        problems.append(f"The WAL receiver is {receiver['status']}, not streaming.")
    if paused:
        problems.append(f"WAL replay is paused (state: {pause_state}).")
    if lag_bytes is None:
        problems.append("Replay lag is unknown: no WAL has been received yet.")
    elif lag_bytes >= lag_limit:
        problems.append(f"Replay lags {lag_bytes} bytes behind receive (limit {lag_limit}).")
    return {
        "role": "follower",
        "receive_lsn": receive_lsn,
        "replay_lsn": replay_lsn,
        "replay_paused": paused,
        "wal_receiver": receiver,
        "lag_bytes": lag_bytes,
        "in_sync": not problems,
        "problems": problems,
    }


def _connect(
    host: str, port: int, user: str, password: str | None, dbname: str, timeout: int
) -> Any:
    """An autocommit connection; a password (when given, else libpq's PGPASSFILE) never
    appears in the error."""
    import psycopg2  # type: ignore[import-untyped]

    try:
        conn = psycopg2.connect(
            host=host,
            port=int(port),
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=int(timeout),
            application_name="saline",
        )
    except psycopg2.Error as exc:
        message = Masker([password] if password else []).text(str(exc).strip())
        raise ExecutionError(f"cannot connect to PostgreSQL at {host}:{port}: {message}") from None
    conn.autocommit = True
    return conn


def replication(
    ctx: Context,
    host: str = "127.0.0.1",
    port: int = 5432,
    user: str = "saline",
    password: str | None = None,
    dbname: str = "postgres",
    lag_bytes: int = DEFAULT_LAG_BYTES,
    timeout: int = 5,
) -> dict[str, Any]:
    """Replication state of the node at ``host:port``; see the module docstring."""
    import psycopg2

    where = f"{host}:{port}"
    conn = _connect(host, port, user, password, dbname, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = %s", (int(timeout) * 1000,))
            cur.execute("SELECT pg_is_in_recovery()")
            (in_recovery,) = cur.fetchone()
            result = _follower(cur, int(lag_bytes)) if in_recovery else _leader(cur)
    except psycopg2.Error as exc:
        raise ExecutionError(f"replication query failed on {where}: {exc}".strip()) from None
    finally:
        conn.close()
    result["node"] = where
    return result


def resume_replay(
    ctx: Context,
    host: str = "127.0.0.1",
    port: int = 5432,
    user: str = "saline",
    password: str | None = None,
    dbname: str = "postgres",
    timeout: int = 5,
) -> dict[str, Any]:
    """Resume WAL replay on a follower whose replay is paused (``pg_wal_replay_resume()``).

    Needs a superuser or an explicit grant. Returns ``{"node", "was_paused"}``; on a leader
    it refuses (there is nothing to resume and the call would fail).
    """
    import psycopg2

    where = f"{host}:{port}"
    conn = _connect(host, port, user, password, dbname, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            if not cur.fetchone()[0]:
                raise ExecutionError(f"{where} is not a follower: no replay to resume")
            cur.execute("SELECT pg_get_wal_replay_pause_state()")
            state = cur.fetchone()[0]
            cur.execute("SELECT pg_wal_replay_resume()")
    except psycopg2.Error as exc:
        raise ExecutionError(f"resuming replay failed on {where}: {exc}".strip()) from None
    finally:
        conn.close()
    return {"node": where, "was_paused": state != "not paused"}


FUNCTIONS = {"replication": replication, "resume_replay": resume_replay}
