"""A stand-in Elasticsearch for the lab and the tests: the health API paths, a shard model.

It speaks the real HTTP paths saline's Elasticsearch checks use (``/``, ``/_cluster/health``,
``/_cat/shards``, ``/_cluster/allocation/explain``, ``/_cluster/reroute``), and the document
APIs the returner uses (``_bulk``, ``_index_template``, ``_doc``, ``_count``: see
:mod:`saline.lab.es_documents`), over a mutable
model of nodes and shard copies. It never allocates a shard on its own: after a fault, only
``POST /_cluster/reroute`` assigns shards again, as an operator (or a saline reactor) must.

Faithful where the Python client looks:

- ``modern=True`` sends ``X-Elastic-Product: Elasticsearch`` on every response (7.14+);
  ``modern=False`` plays a release older than 7.14 (default "6.8.23"), which does not.
- ``Accept: application/vnd.elasticsearch+json; compatible-with=N``: 6.x/7.x ignore the
  version and answer ``application/json``; 8.x and later accept only N in {major-1, major}
  and otherwise answer 400 ``media_type_header_exception``, like the real server.
- ``wait_for_status`` that is not reached within ``timeout`` answers 408 with the body.

Run for the lab: ``python -m saline.lab.es_standin --port N [--legacy] [--state-file F]``.
The state file (JSON ``{"health": "yellow", "down": ["es-3"]}``) is reread whenever it
changes, so another process (``saline lab fault``) can inject faults.
"""

import argparse
import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from saline.lab.es_documents import Documents

STATUS_RANK = {"red": 0, "yellow": 1, "green": 2}
_COMPAT_RE = re.compile(r"compatible-with=(\d+)")
_DURATION_RE = re.compile(r"^(\d+)(ms|s|m)?$")
_NO_UNASSIGNED = (
    "unable to find any unassigned shards to explain [ClusterAllocationExplainRequest"
    "[useAnyUnassignedShard=true,includeYesDecisions?=false]"
)
_MAX_RETRY = (
    "shard has exceeded the maximum number of retries [5] on failed allocation attempts - "
    "manually call [/_cluster/reroute?retry_failed=true] to retry"
)
_SAME = "a copy of this shard is already allocated to this node"
_BLOCKED = "cannot allocate because allocation is not permitted to any of the nodes"


@dataclass
class ShardCopy:
    """One copy of one shard: a primary or a replica, on a node or unassigned."""

    index: str
    shard: int
    primary: bool
    node: str | None = None
    #: why it is unassigned: NODE_LEFT (reroute places it) or ALLOCATION_FAILED (retry_failed)
    reason: str | None = None


def parse_duration(text: str) -> float:
    """Seconds in an Elasticsearch time value ("30s", "500ms", "1m", bare = ms)."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"failed to parse setting [timeout] with value [{text}]")
    value, unit = int(match.group(1)), match.group(2) or "ms"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


class EsStandin:
    """An in-process stand-in Elasticsearch cluster; every method is thread-safe."""

    def __init__(
        self,
        *,
        modern: bool = True,
        version: str | None = None,
        cluster_name: str = "chef-backend",
        nodes: int = 3,
        indices: tuple[str, ...] = ("chef",),
        primaries: int = 5,
        replicas: int = 2,
        state_file: Path | None = None,
    ) -> None:
        self.modern = modern
        self.version = version or ("7.17.0" if modern else "6.8.23")
        self.cluster_name = cluster_name
        self.nodes = {f"es-{i + 1}": True for i in range(nodes)}
        self.shards = [
            ShardCopy(index, number, copy == 0)
            for index in indices
            for number in range(primaries)
            for copy in range(replicas + 1)
        ]
        self.state_file = state_file
        self._state_seen: tuple[int, int] | None = None
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        #: what returners wrote (``_bulk``, index templates): kept across stop and start
        self.documents = Documents()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.set_health("green")

    # -- the model -------------------------------------------------------------------------

    def set_health(self, status: str) -> None:
        """Bring every node up and assign all; then unassign replicas (yellow) or a primary (red).

        Shards unassigned here failed allocation: only a reroute with retry_failed fixes them.
        """
        if status not in STATUS_RANK:
            raise ValueError(f"unknown health {status!r}")
        with self._changed:
            for name in self.nodes:
                self.nodes[name] = True
            for copy in self.shards:
                copy.node = copy.reason = None
            self._allocate(retry_failed=True)
            first = self.shards[0]
            for copy in self.shards:
                same_index = copy.index == first.index
                if (status == "yellow" and same_index and not copy.primary) or (
                    status == "red" and same_index and copy.shard == 0
                ):
                    copy.node, copy.reason = None, "ALLOCATION_FAILED"
            self._changed.notify_all()

    def fail_node(self, name: str | None = None) -> str:
        """Take a node down (default: the last one up); its shards become unassigned.

        A lost primary is replaced by promoting an assigned replica, as Elasticsearch does.
        :returns: the node's name.
        """
        with self._changed:
            up = [node for node, is_up in self.nodes.items() if is_up]
            name = name or up[-1]
            if name not in self.nodes:
                raise ValueError(f"no node {name!r}")
            self.nodes[name] = False
            for copy in self.shards:
                if copy.node != name:
                    continue
                copy.node, copy.reason = None, "NODE_LEFT"
                if copy.primary:
                    spare = next((c for c in self._copies(copy) if c.node is not None), None)
                    if spare is not None:
                        spare.primary, copy.primary = True, False
            self._changed.notify_all()
            return name

    def recover_node(self, name: str | None = None) -> str:
        """Bring a node back (default: the first one down); shards wait for a reroute."""
        with self._changed:
            name = name or next(node for node, is_up in self.nodes.items() if not is_up)
            self.nodes[name] = True
            self._changed.notify_all()
            return name

    def reroute(self, *, retry_failed: bool) -> None:
        """Assign what can be assigned; ALLOCATION_FAILED shards only with ``retry_failed``."""
        with self._changed:
            self._allocate(retry_failed=retry_failed)
            self._changed.notify_all()

    def _copies(self, copy: ShardCopy) -> list[ShardCopy]:
        return [c for c in self.shards if (c.index, c.shard) == (copy.index, copy.shard)]

    def _allocate(self, *, retry_failed: bool) -> None:
        up = [node for node, is_up in self.nodes.items() if is_up]
        for copy in sorted(self.shards, key=lambda c: not c.primary):  # primaries first
            if copy.node is not None or (copy.reason == "ALLOCATION_FAILED" and not retry_failed):
                continue
            siblings = self._copies(copy)
            primary = next(c for c in siblings if c.primary)
            if not copy.primary and primary.node is None:
                continue  # a replica needs its primary first
            used = {c.node for c in siblings}
            free = [node for node in up if node not in used]
            if free:
                copy.node, copy.reason = free[0], None

    def health(self) -> dict[str, Any]:
        """The ``_cluster/health`` body for the current model."""
        with self._changed:
            active = [c for c in self.shards if c.node is not None]
            unassigned = len(self.shards) - len(active)
            missing_primary = any(c.primary and c.node is None for c in self.shards)
            status = "red" if missing_primary else "yellow" if unassigned else "green"
            up = sum(self.nodes.values())
            return {
                "cluster_name": self.cluster_name,
                "status": status,
                "timed_out": False,
                "number_of_nodes": up,
                "number_of_data_nodes": up,
                "active_primary_shards": sum(c.primary for c in active),
                "active_shards": len(active),
                "relocating_shards": 0,
                "initializing_shards": 0,
                "unassigned_shards": unassigned,
                "delayed_unassigned_shards": 0,
                "number_of_pending_tasks": 0,
                "active_shards_percent_as_number": 100.0 * len(active) / len(self.shards),
            }

    def wait_for_status(self, wanted: str, timeout: float) -> tuple[bool, dict[str, Any]]:
        """Wait until the status is ``wanted`` or better; :returns: (reached, health body)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self.reload_state()
                body = self.health()
                remaining = deadline - time.monotonic()
                if STATUS_RANK[body["status"]] >= STATUS_RANK[wanted] or remaining <= 0:
                    return STATUS_RANK[body["status"]] >= STATUS_RANK[wanted], body
                # woken by any model change; the short cap also rereads the state file
                self._changed.wait(min(remaining, 0.1))

    def cat_shards(self) -> list[dict[str, Any]]:
        """The ``_cat/shards?format=json`` rows."""
        with self._changed:
            rows: list[dict[str, Any]] = []
            for c in self.shards:
                up = c.node is not None
                placed = (
                    ("STARTED", "0", "208b", "127.0.0.1") if up else ("UNASSIGNED",) + (None,) * 3
                )
                row = dict(zip(("state", "docs", "store", "ip"), placed, strict=True))
                rows.append({"index": c.index, "shard": str(c.shard), "prirep": "rp"[c.primary]})
                rows[-1] |= row | {"node": c.node}
            return rows

    def explain(self) -> dict[str, Any] | None:
        """The allocation explanation of the first unassigned shard, or None if there is none."""
        with self._changed:
            copy = next((c for c in self.shards if c.node is None), None)
            if copy is None:
                return None
            holders = {c.node for c in self._copies(copy)}
            decisions = [
                {
                    "node_name": node,
                    "node_decision": "no",
                    "deciders": [
                        {"decider": "max_retry", "decision": "NO", "explanation": _MAX_RETRY}
                        if copy.reason == "ALLOCATION_FAILED"
                        else {"decider": "same_shard", "decision": "NO", "explanation": _SAME}
                    ],
                }
                for node, is_up in self.nodes.items()
                if is_up and (copy.reason == "ALLOCATION_FAILED" or node in holders)
            ]
            blocked = bool(decisions) or not any(self.nodes.values())
            return {
                "index": copy.index,
                "shard": copy.shard,
                "primary": copy.primary,
                "current_state": "unassigned",
                "unassigned_info": {"reason": copy.reason, "last_allocation_status": "no"},
                "can_allocate": "no" if blocked else "yes",
                "allocate_explanation": _BLOCKED if blocked else "can allocate the shard",
                "node_allocation_decisions": decisions,
            }

    def reload_state(self) -> None:
        """Apply the state file if it changed since last read (``health``, then ``down``)."""
        if self.state_file is None:
            return
        try:
            stat = self.state_file.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen == self._state_seen:
                return
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        with self._changed:
            self._state_seen = seen
            self.set_health(state.get("health", "green"))
            for node in state.get("down", []):
                if node in self.nodes:
                    self.fail_node(node)

    # -- the server ------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve in a background thread; :returns: the bound (host, port)."""
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        return str(bound_host), int(bound_port)

    def stop(self) -> None:
        """Stop serving: close the listening socket and every open connection (a client's
        keep-alive connection must not outlive the server, as with a real one going down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def info(self) -> dict[str, Any]:
        """The ``GET /`` body."""
        return {
            "name": "es-1",
            "cluster_name": self.cluster_name,
            "version": {"number": self.version, "build_flavor": "default"},
            "tagline": "You Know, for Search",
        }


def _error(kind: str, reason: str, status: int) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class _Handler(BaseHTTPRequestHandler):
    standin: EsStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests and the lab log elsewhere."""

    def setup(self) -> None:
        super().setup()
        with self.standin._conns_lock:
            self.standin._conns.add(self.connection)

    def finish(self) -> None:
        with self.standin._conns_lock:
            self.standin._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        es = self.standin
        es.reload_state()
        major = int(es.version.split(".")[0])
        compat = _COMPAT_RE.search(self.headers.get("Accept", ""))
        if major >= 8 and compat and int(compat.group(1)) not in (major - 1, major):
            reason = f"Accept version must be either version {major} or {major - 1}, but found "
            self._send(400, _error("media_type_header_exception", reason + compat.group(1), 400))
            return
        path = url.path.rstrip("/") or "/"
        if path == "/" and method == "GET":
            self._send(200, es.info())
        elif path == "/_cluster/health" and method == "GET":
            self._health(query)
        elif path == "/_cat/shards" and method == "GET":
            self._send(200, es.cat_shards())
        elif path == "/_cluster/allocation/explain":
            explained = es.explain()
            if explained is None:
                self._send(400, _error("illegal_argument_exception", _NO_UNASSIGNED, 400))
            else:
                self._send(200, explained)
        elif path == "/_cluster/reroute" and method == "POST":
            es.reroute(retry_failed=query.get("retry_failed") in ("", "true"))
            self._send(200, {"acknowledged": True})
        elif not self._documents(method, path, body):
            reason = f"no handler found for uri [{url.path}] and method [{method}]"
            self._send(400, _error("illegal_argument_exception", reason, 400))

    def _documents(self, method: str, path: str, body: bytes) -> bool:
        """The document APIs a returner uses; False when ``path`` is none of them."""
        docs = self.standin.documents
        parts = path.strip("/").split("/")
        if path == "/_bulk" and method in ("POST", "PUT"):
            self._send(*docs.bulk(body))
        elif len(parts) == 2 and parts[0] == "_index_template" and method == "PUT":
            try:
                template = json.loads(body or b"{}")
            except ValueError as e:
                self._send(400, _error("x_content_parse_exception", str(e), 400))
                return True
            self._send(*docs.put_template(parts[1], template))
        elif len(parts) == 3 and parts[1] == "_doc" and method == "GET":
            self._send(*docs.get(parts[0], parts[2]))
        elif len(parts) == 2 and parts[1] == "_count" and method in ("GET", "POST"):
            self._send(*docs.count(parts[0]))
        else:
            return False
        return True

    def _health(self, query: dict[str, str]) -> None:
        wanted = query.get("wait_for_status")
        if wanted is None:
            self._send(200, self.standin.health())
            return
        try:
            timeout = parse_duration(query.get("timeout", "30s"))
            if wanted not in STATUS_RANK:
                raise ValueError(f"unknown wait_for_status [{wanted}]")
        except ValueError as exc:
            self._send(400, _error("illegal_argument_exception", str(exc), 400))
            return
        reached, body = self.standin.wait_for_status(wanted, timeout)
        body["timed_out"] = not reached
        self._send(200 if reached else 408, body)

    def _send(self, status: int, body: Any) -> None:
        es = self.standin
        payload = json.dumps(body).encode()
        compat = _COMPAT_RE.search(self.headers.get("Accept", ""))
        if compat and int(es.version.split(".")[0]) >= 8 and status < 400:
            content_type = f"application/vnd.elasticsearch+json;compatible-with={compat.group(1)}"
        else:
            content_type = "application/json; charset=UTF-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if es.modern:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        self.end_headers()
        self.wfile.write(payload)


def main(argv: list[str] | None = None) -> None:
    """``python -m saline.lab.es_standin``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="stand-in Elasticsearch for the saline lab")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--legacy", action="store_true", help="play a release older than 7.14")
    parser.add_argument("--version", dest="es_version", help="version.number to report")
    parser.add_argument("--state-file", type=Path, help="JSON fault state, reread on change")
    args = parser.parse_args(argv)
    standin = EsStandin(modern=not args.legacy, version=args.es_version, state_file=args.state_file)
    host, port = standin.start(args.host, args.port)
    print(f"es-standin listening on http://{host}:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
