"""elasticsearch.*: cluster health, shards, allocation explain and reroute for chef-backend.

Every function talks to one node's HTTP API, first through the official client
(``elasticsearch-py``). The client refuses servers that do not send
``X-Elastic-Product: Elasticsearch`` (releases older than 7.14) with
``UnsupportedProductError``, and 8.x servers reject the 9.x client's
``compatible-with=9`` media type with a 400 ``media_type_header_exception``. In both cases
the function repeats the request as a plain HTTP call (urllib, no product check) and says so
in its ``client`` field: ``"elasticsearch-py"`` or ``"http-fallback"``. The product check is
never disabled and the client never patched.

The client is imported inside the functions: the minion does not load it at start.
"""

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from minion.modules.base import Context
from saline.errors import ExecutionError

if TYPE_CHECKING:
    from elastic_transport import ApiResponse
    from elasticsearch import Elasticsearch

DEFAULT_URL = "http://127.0.0.1:9200"
CLIENT = "elasticsearch-py"
FALLBACK = "http-fallback"
#: plain HTTP by choice: what long-lived callers (beacons in the minion) use to stay light
HTTP = "http"
CLIENTS = ("auto", HTTP)

ClientCall = Callable[["Elasticsearch"], "ApiResponse[Any]"]


class _Session:
    """One function call's line to Elasticsearch: the client until it refuses the server.

    :meth:`call` returns ``(http status, decoded body)`` for every answer, error statuses
    included; it raises :class:`ExecutionError` only when no answer came.
    """

    def __init__(self, url: str, timeout: float, client: str = "auto") -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ExecutionError(f"elasticsearch url must be http(s)://..., not {url!r}")
        if client not in CLIENTS:
            raise ExecutionError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client: Elasticsearch | None = None
        if client == HTTP:
            self.mode = HTTP  # the official client (~23 MB) is never imported
            return
        import elasticsearch

        self.mode = CLIENT
        self.client = elasticsearch.Elasticsearch(
            hosts=[self.url], request_timeout=timeout, max_retries=0, retry_on_timeout=False
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def call(
        self, via_client: ClientCall, method: str, path: str, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Run ``via_client`` with the official client, or ``method path?query`` by hand."""
        if self.client is not None and self.mode == CLIENT:
            answer = self._with_client(via_client, self.client)
            if answer is not None:
                return answer
            self.mode = FALLBACK
        return self._with_urllib(method, path, query or {})

    def _with_client(
        self, via_client: ClientCall, client: "Elasticsearch"
    ) -> tuple[int, Any] | None:
        """The client's answer, or None when it refused the server as not Elasticsearch."""
        import elastic_transport
        import elasticsearch

        try:
            response = via_client(client)
        except elasticsearch.UnsupportedProductError:
            return None
        except elasticsearch.ApiError as exc:
            if exc.meta.status == 400 and _error_type(exc.body) == "media_type_header_exception":
                return None
            return exc.meta.status, exc.body
        except elastic_transport.ConnectionTimeout as exc:
            raise ExecutionError(
                f"elasticsearch at {self.url} did not answer within {self.timeout}s: {exc}"
            ) from exc
        except elastic_transport.ConnectionError as exc:
            raise ExecutionError(f"elasticsearch at {self.url} is unreachable: {exc}") from exc
        return response.meta.status, response.body

    def _with_urllib(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        import urllib.error  # lazily: it pulls in http.client and ssl
        import urllib.request

        target = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            target,
            method=method,
            data=b"" if method == "POST" else None,
            headers={"Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
                return reply.status, _decode(reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read())
        except TimeoutError as exc:
            raise ExecutionError(
                f"elasticsearch at {self.url} did not answer within {self.timeout}s: {exc}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ExecutionError(f"elasticsearch at {self.url} is unreachable: {exc}") from exc

    def failed(self, status: int, body: Any) -> ExecutionError:
        """The error for an answer the caller cannot use."""
        reason = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(reason, dict):
            reason = f"{reason.get('type')}: {reason.get('reason')}"
        return ExecutionError(f"elasticsearch at {self.url} answered {status}: {reason}")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type")) if isinstance(error, dict) else None


def _run(
    url: str, timeout: float, work: Callable[[_Session], dict[str, Any]], client: str = "auto"
) -> dict[str, Any]:
    session = _Session(url, timeout, client)
    try:
        result = work(session)
    finally:
        session.close()
    return result | {"client": session.mode}


def health(
    ctx: Context,
    url: str = DEFAULT_URL,
    timeout: float = 5,
    wait_for_status: str | None = None,
    client: str = "auto",
) -> dict[str, Any]:
    """Cluster health and the server's version.

    ``client``: ``auto`` uses the official client and falls back to plain HTTP for a server
    it refuses; ``http`` uses plain HTTP only (the beacon's choice: no client in the minion).

    With ``wait_for_status`` ("green", "yellow" or "red") the server waits up to ``timeout``
    seconds for that status or better; if it is not reached Elasticsearch answers 408 and
    the result carries the status it had, with ``timed_out`` true (not an error).

    :returns: ``status``, ``number_of_nodes``, ``unassigned_shards``,
        ``active_primary_shards``, ``cluster_name``, ``timed_out``, ``server_version`` and
        ``client`` ("elasticsearch-py", "http-fallback" or "http").
    """

    wait = f"{round(timeout * 1000)}ms"  # Elasticsearch rejects fractional time values

    def work(es: _Session) -> dict[str, Any]:
        status, info = es.call(lambda c: c.info(), "GET", "/")
        if status != 200:
            raise es.failed(status, info)
        if wait_for_status is None:
            status, body = es.call(lambda c: c.cluster.health(), "GET", "/_cluster/health")
        else:
            status, body = es.call(
                lambda c: c.cluster.health(
                    wait_for_status=wait_for_status,
                    timeout=wait,
                ),
                "GET",
                "/_cluster/health",
                {"wait_for_status": wait_for_status, "timeout": wait},
            )
        if status not in (200, 408) or not isinstance(body, dict) or "status" not in body:
            raise es.failed(status, body)
        keys = ("status", "number_of_nodes", "unassigned_shards", "active_primary_shards")
        return {key: body.get(key) for key in (*keys, "cluster_name")} | {
            "timed_out": status == 408 or bool(body.get("timed_out")),
            "server_version": info.get("version", {}).get("number"),
        }

    # the server may hold the request for ``timeout``: give the answer time to arrive
    return _run(url, timeout + 5 if wait_for_status else timeout, work, client)


def shards(ctx: Context, url: str = DEFAULT_URL, timeout: float = 5) -> dict[str, Any]:
    """Every shard copy (``_cat/shards``).

    :returns: ``shards`` (rows with index, shard, prirep, state, node...), ``unassigned``
        (the rows not STARTED/RELOCATING/INITIALIZING) and ``client``.
    """

    def work(es: _Session) -> dict[str, Any]:
        status, rows = es.call(
            lambda c: c.cat.shards(format="json"), "GET", "/_cat/shards", {"format": "json"}
        )
        if status != 200 or not isinstance(rows, list):
            raise es.failed(status, rows)
        unassigned = [row for row in rows if row.get("state") == "UNASSIGNED"]
        return {"shards": rows, "unassigned": unassigned}

    return _run(url, timeout, work)


def allocation_explain(ctx: Context, url: str = DEFAULT_URL, timeout: float = 5) -> dict[str, Any]:
    """Why the first unassigned shard is unassigned (``_cluster/allocation/explain``).

    :returns: ``unassigned_shard`` (False when every shard is assigned: Elasticsearch then
        answers 400, which is not an error here), ``explanation`` (the body or None),
        ``message`` and ``client``.
    """

    def work(es: _Session) -> dict[str, Any]:
        status, body = es.call(
            lambda c: c.cluster.allocation_explain(), "POST", "/_cluster/allocation/explain"
        )
        if status == 200 and isinstance(body, dict):
            message = body.get("allocate_explanation") or body.get("can_allocate")
            return {"unassigned_shard": True, "explanation": body, "message": message}
        if status == 400 and _error_type(body) == "illegal_argument_exception":
            reason = body["error"].get("reason", "")
            return {"unassigned_shard": False, "explanation": None, "message": reason}
        raise es.failed(status, body)

    return _run(url, timeout, work)


def reroute_retry_failed(
    ctx: Context, url: str = DEFAULT_URL, timeout: float = 5
) -> dict[str, Any]:
    """Ask the cluster to allocate again, retrying shards that exhausted their retries.

    :returns: ``acknowledged`` and ``client``. Check ``health`` afterwards: allocation
        continues after the answer.
    """
    query = {"retry_failed": "true", "filter_path": "acknowledged"}

    def work(es: _Session) -> dict[str, Any]:
        status, body = es.call(
            lambda c: c.cluster.reroute(retry_failed=True, filter_path="acknowledged"),
            "POST",
            "/_cluster/reroute",
            query,
        )
        if status != 200 or not isinstance(body, dict):
            raise es.failed(status, body)
        return {"acknowledged": bool(body.get("acknowledged"))}

    return _run(url, timeout, work)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "health": health,
    "shards": shards,
    "allocation_explain": allocation_explain,
    "reroute_retry_failed": reroute_retry_failed,
}
