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
from minion.modules.cmd import parse_bool
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
SELECT status, last_msg_receipt_time, sender_host, sender_port, conninfo,
       current_setting('cluster_name')
FROM pg_stat_wal_receiver
"""

#: the leader's row(s) for one follower, lags measured against the leader's current position
_SENDER_SQL = """
SELECT host(client_addr), state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
       extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8,
       extract(epoch FROM replay_lag)::float8, extract(epoch FROM now() - reply_time)::float8
FROM pg_stat_replication WHERE application_name = %s
"""
#: seconds: the leader's replay lag in time, and the silence of a follower's replies, beyond
#: which the leader's view says out of sync (a follower replies every
#: wal_receiver_status_interval, 10 s by default: keep max_reply_age well above it)
DEFAULT_MAX_LAG_SECONDS = 30.0
DEFAULT_MAX_REPLY_AGE = 30.0


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
            # the name the leader knows it by (its conninfo is not returned: it names the user)
            "application_name": _application_name(row[4], row[5]),
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


def _application_name(conninfo: str | None, cluster_name: str | None) -> str:
    """The follower's name in the leader's ``pg_stat_replication``: ``application_name`` of
    its conninfo, else its ``cluster_name``, else PostgreSQL's default ``walreceiver``."""
    import psycopg2.extensions  # type: ignore[import-untyped]

    if conninfo:
        try:
            name = psycopg2.extensions.parse_dsn(conninfo).get("application_name")
        except psycopg2.ProgrammingError:
            name = None
        if name:
            return str(name)
    return cluster_name or "walreceiver"


def judge_leader_view(
    rows: list[tuple[Any, ...]],
    name: str,
    host: str,
    lag_bytes: int,
    max_lag_seconds: float,
    max_reply_age: float,
) -> dict[str, Any]:
    """The leader's view of one follower from its ``pg_stat_replication`` rows named ``name``
    (``_SENDER_SQL``'s columns), with a sentence per problem (pure).

    Several rows (a stale sender beside a new one): the one from the follower's address,
    then the one that heard from it last.
    """
    if not rows:
        problem = f"The leader has no WAL sender for this follower (application_name {name})."
        return {"sender": False, "problems": [problem]}
    ranked = sorted(rows, key=lambda r: (r[0] != host, r[8] if r[8] is not None else 1e18))
    addr, state, write, flush, replay, write_s, flush_s, replay_s, reply_age = ranked[0]
    view = {
        "sender": True,
        "client_addr": addr,
        "state": state,
        "write_lag_bytes": write,
        "flush_lag_bytes": flush,
        "replay_lag_bytes": replay,
        "write_lag_seconds": write_s,
        "flush_lag_seconds": flush_s,
        "replay_lag_seconds": replay_s,
        "reply_age_seconds": None if reply_age is None else round(reply_age, 3),
    }
    problems: list[str] = []
    if state != "streaming":
        problems.append(f"The leader's WAL sender is {state}, not streaming.")
    if replay is not None and replay >= lag_bytes:
        problems.append(f"The leader sees replay {replay} bytes behind (limit {lag_bytes}).")
    if replay_s is not None and replay_s >= max_lag_seconds:
        problems.append(
            f"The leader sees replay {replay_s:.1f}s behind (limit {max_lag_seconds:g}s)."
        )
    if reply_age is None or reply_age >= max_reply_age:
        silent = "ever" if reply_age is None else f"for {reply_age:.1f}s"
        problems.append(
            f"The leader has heard nothing from this follower {silent} (limit {max_reply_age:g}s)."
        )
    view["problems"] = problems
    return view


def _leader_view(
    receiver: dict[str, Any],
    host: str,
    user: str,
    password: str | None,
    dbname: str,
    timeout: int,
    limits: tuple[int, float, float],
) -> dict[str, Any]:
    """Ask the leader the follower streams from about it; unreachable: an ``error``, no
    problem (the follower's own view still judges, and a false alarm would start a ladder)."""
    import psycopg2

    where = f"{receiver['sender_host']}:{receiver['sender_port']}"
    try:
        conn = _connect(
            receiver["sender_host"], receiver["sender_port"], user, password, dbname, timeout
        )
    except ExecutionError as exc:
        return {"leader": where, "error": str(exc), "problems": []}
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = %s", (int(timeout) * 1000,))
            cur.execute(_SENDER_SQL, (receiver["application_name"],))
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        return {"leader": where, "error": f"query failed: {exc}".strip(), "problems": []}
    finally:
        conn.close()
    return {"leader": where, **judge_leader_view(rows, receiver["application_name"], host, *limits)}


def _connect(
    host: str, port: int, user: str, password: str | None, dbname: str, timeout: int
) -> Any:
    """An autocommit connection; a password (when given, else libpq's PGPASSFILE) never
    appears in the error."""
    import psycopg2

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
    leader_view: bool | str = True,
    max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS,
    max_reply_age: float = DEFAULT_MAX_REPLY_AGE,
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
    if result["role"] == "follower":
        receiver = result["wal_receiver"]
        views: dict[str, Any] = {"follower": {"problems": list(result["problems"])}}
        if parse_bool(leader_view, "leader_view") and receiver and receiver["sender_host"]:
            limits = (int(lag_bytes), float(max_lag_seconds), float(max_reply_age))
            views["leader"] = _leader_view(receiver, host, user, password, dbname, timeout, limits)
            result["problems"] += views["leader"]["problems"]
        # the worst view wins: out of sync if any view saw a problem, and each is named
        result["views"] = views
        result["seen_by"] = [name for name, view in views.items() if view["problems"]]
        result["in_sync"] = not result["problems"]
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
