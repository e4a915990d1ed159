"""etcd.*: per-member health and membership of the etcd cluster behind the PostgreSQL HA pair.

Every endpoint is asked on its own (the ``etcd3`` client talks to one endpoint and has no
failover), so one dead member never hides the others' answers:

- ``GET /health`` over plain HTTP: 200 ``{"health": "true"}`` only when the member has a
  leader, no alarm and can serve a read, i.e. when it is part of a quorum;
- the maintenance ``Status`` call, for leader, raft term, member id and version: through the
  ``etcd3`` gRPC client when it imports (``client: "etcd3"``), else through etcd's JSON
  gateway ``POST /v3/maintenance/status`` (``client: "http-fallback"``), ``GET /version``
  as a last resort.

``etcd3`` (0.12, generated with old protoc) fails to import with protobuf >= 4 unless the
pure-Python protobuf implementation is selected before protobuf is first imported. The
client is therefore imported lazily inside the functions (the minion does not load it, nor
protobuf/grpc, at start) and any import failure falls back to HTTP.
"""

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from minion.modules.base import Context
from saline.errors import ExecutionError

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
CLIENT = "etcd3"
FALLBACK = "http-fallback"
HTTP = "http"


def _load_client() -> Any:
    """The ``etcd3`` module, or None when it cannot be imported here."""
    # etcd3 0.12's generated *_pb2 modules are rejected by protobuf >= 4's C/upb backend
    # ("Descriptors cannot be created directly"); the pure-Python backend accepts them. The
    # variable is read once, when protobuf is first imported, so it must be set before the
    # import below. setdefault: an operator's explicit choice wins (and may then fall back).
    # Execution functions run in a forked job child, so this does not leak into the minion
    # (beacons, which run in the minion, ask for client=http and never get here).
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    try:
        with warnings.catch_warnings():  # its old *_pb2 modules warn on every descriptor
            warnings.simplefilter("ignore", DeprecationWarning)
            import etcd3  # type: ignore[import-untyped]
    except (ImportError, TypeError):
        # ImportError: not installed; TypeError: protobuf already loaded with the upb backend
        return None
    return etcd3


def _endpoints(endpoints: str | Sequence[str]) -> list[str]:
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    urls = [str(item).strip().rstrip("/") for item in items if str(item).strip()]
    if not urls:
        raise ExecutionError("etcd: no endpoint given")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ExecutionError(f"etcd endpoint must be http(s)://host:port, not {url!r}")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ExecutionError(f"etcd endpoint has a bad port: {url!r}") from exc
    return urls


def _timeout(timeout: float) -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError) as exc:
        raise ExecutionError(f"etcd: timeout must be a number, not {timeout!r}") from exc
    if value <= 0:
        raise ExecutionError(f"etcd: timeout must be positive, not {timeout!r}")
    return value


def _hex(value: Any) -> str | None:
    """Member ids as etcdctl prints them (hex); 0 means "none"."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return f"{number:x}" if number else None


def _http(url: str, timeout: float, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """``(status, decoded JSON)`` for any HTTP answer; raises OSError when none came."""
    import urllib.error  # lazily: it pulls in http.client and ssl, which an idle minion
    import urllib.request  # never needs (jobs run in forked children)

    data = None if body is None else json.dumps(body).encode()
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _http_health(url: str, timeout: float) -> tuple[bool, str | None]:
    try:
        status, body = _http(f"{url}/health", timeout)
    except OSError as exc:
        return False, f"GET /health: {exc}"
    if status == 200 and isinstance(body, dict) and body.get("health") == "true":
        return True, None
    return False, f"GET /health: {status} {body}"


def _status_client(etcd3: Any, url: str, timeout: float) -> dict[str, Any]:
    parts = urlsplit(url)
    client = etcd3.client(host=parts.hostname, port=parts.port or 2379, timeout=timeout)
    try:
        # The raw maintenance Status answer: client.status() drops the answering member's id
        # (header.member_id) and lists all members just to resolve the leader.
        resp = client.maintenancestub.Status(etcd3.etcdrpc.StatusRequest(), timeout)
    finally:
        client.close()
    return {
        "member_id": _hex(resp.header.member_id),
        "leader_id": _hex(resp.leader),
        "raft_term": int(resp.raftTerm),
        "version": str(resp.version),
    }


def _status_http(url: str, timeout: float) -> dict[str, Any]:
    status, body = _http(f"{url}/v3/maintenance/status", timeout, body={})
    if status == 200 and isinstance(body, dict):
        header = body.get("header") or {}
        return {
            "member_id": _hex(header.get("member_id")),
            "leader_id": _hex(body.get("leader")),
            "raft_term": int(body.get("raftTerm", header.get("raft_term", 0))),
            "version": body.get("version"),
        }
    status, body = _http(f"{url}/version", timeout)
    if status != 200 or not isinstance(body, dict):
        raise OSError(f"GET /version: {status} {body}")
    return {
        "member_id": None,
        "leader_id": None,
        "raft_term": None,
        "version": body.get("etcdserver"),
    }


def _check(etcd3: Any, url: str, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "endpoint": url,
        "healthy": False,
        "error": None,
        "leader": None,
        "member_id": None,
        "raft_term": None,
        "version": None,
    }
    ok, error = _http_health(url, timeout)
    try:
        status = _status_client(etcd3, url, timeout) if etcd3 else _status_http(url, timeout)
    except Exception as exc:  # grpc/etcd3/OS errors: report, never raise
        status = None
        error = error or f"status: {type(exc).__name__}: {exc}"
    if status is not None:
        result["member_id"] = status["member_id"]
        result["raft_term"] = status["raft_term"]
        result["version"] = status["version"]
        if status["member_id"] is not None:
            result["leader"] = status["leader_id"] is not None and (
                status["leader_id"] == status["member_id"]
            )
    result["healthy"] = ok and status is not None
    result["error"] = None if result["healthy"] else (error or "unhealthy")
    return result


def health(
    ctx: Context,
    endpoints: str | Sequence[str] = DEFAULT_ENDPOINT,
    timeout: float = 3,
    client: str = "auto",
) -> dict[str, Any]:
    """Health of every endpoint, and whether the healthy ones make a quorum.

    ``endpoints``: comma-separated URLs or a list. Unreachable members are reported in
    ``endpoints`` with ``healthy: false`` and an ``error``; nothing is raised for them.
    ``client``: ``auto`` (etcd3 when it loads, else the HTTP gateway) or ``http`` (the HTTP
    gateway only: what beacons use, so grpc and protobuf never load in the minion).
    """
    if client not in ("auto", HTTP):
        raise ExecutionError(f"client must be auto or {HTTP}, got {client!r}")
    urls = _endpoints(endpoints)
    seconds = _timeout(timeout)
    etcd3 = _load_client() if client == "auto" else None
    checks = [_check(etcd3, url, seconds) for url in urls]
    healthy_count = sum(1 for check in checks if check["healthy"])
    quorum = len(urls) // 2 + 1
    return {
        "client": CLIENT if etcd3 else (HTTP if client == HTTP else FALLBACK),
        "endpoints": checks,
        "healthy_count": healthy_count,
        "total": len(urls),
        "quorum": quorum,
        "healthy": healthy_count >= quorum,
        "leaders": sorted({c["member_id"] for c in checks if c["leader"] and c["member_id"]}),
    }


def _members_client(etcd3: Any, url: str, timeout: float) -> list[dict[str, Any]]:
    parts = urlsplit(url)
    client = etcd3.client(host=parts.hostname, port=parts.port or 2379, timeout=timeout)
    try:
        return [
            {
                "name": m.name,
                "id": _hex(m.id),
                "peer_urls": list(m.peer_urls),
                "client_urls": list(m.client_urls),
            }
            for m in client.members
        ]
    finally:
        client.close()


def _members_http(url: str, timeout: float) -> list[dict[str, Any]]:
    status, body = _http(f"{url}/v3/cluster/member/list", timeout, body={})
    if status == 200 and isinstance(body, dict):
        raw, id_key = body.get("members") or [], "ID"
    else:  # v2 API: only when etcd 3.4 runs with --enable-v2
        status, body = _http(f"{url}/v2/members", timeout)
        if status != 200 or not isinstance(body, dict):
            raise OSError(f"member list: {status} {body}")
        raw, id_key = body.get("members") or [], "id"
    return [
        {
            "name": m.get("name", ""),
            "id": _hex(m[id_key]) if id_key == "ID" else m.get("id"),
            "peer_urls": list(m.get("peerURLs") or []),
            "client_urls": list(m.get("clientURLs") or []),
        }
        for m in raw
    ]


def members(
    ctx: Context, endpoint: str | Sequence[str] = DEFAULT_ENDPOINT, timeout: float = 3
) -> list[dict[str, Any]]:
    """The cluster's members (name, hex id, peer and client URLs).

    ``endpoint`` may list several URLs (comma-separated or a list): they are tried in order
    until one answers. Raises :class:`ExecutionError` when none does.
    """
    urls = _endpoints(endpoint)
    seconds = _timeout(timeout)
    etcd3 = _load_client()
    errors = []
    for url in urls:
        try:
            if etcd3 is not None:
                return _members_client(etcd3, url, seconds)
            return _members_http(url, seconds)
        except Exception as exc:  # try the next endpoint
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
    raise ExecutionError("etcd: no endpoint answered the member list: " + "; ".join(errors))


FUNCTIONS = {"health": health, "members": members}
