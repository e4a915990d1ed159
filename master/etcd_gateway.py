"""A small client of etcd's v3 JSON gateway (``/v3/...`` over HTTP): leases, transactions,
ranges — what leadership needs, and nothing else.

Why the gateway and not the ``etcd3`` gRPC package: that package is unmaintained since
2020, needs an old protobuf, talks to one endpoint only and has no failover; the gateway is
part of every etcd 3.4+ server, speaks JSON, and any member answers. Each call tries the
endpoints in turn, starting with the last one that answered, each with a short timeout.
Keys and values travel base64-encoded; numbers as strings (protobuf's JSON mapping).
"""

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from saline.errors import SalineError


class EtcdUnavailable(SalineError):
    """No endpoint answered (the message lists each one's failure)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Holder:
    """Who holds a key: its value, the lease it is bound to, and its create revision."""

    value: str
    lease: int
    create_revision: int


class EtcdGateway:
    def __init__(self, endpoints: list[str], timeout: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("etcd: no endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._preferred = 0

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        failures = []
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            url = self.endpoints[index] + path
            request = urllib.request.Request(  # noqa: S310 - http(s) endpoints from config
                url, data=data, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    line = response.read().splitlines()[0]
            except (OSError, urllib.error.URLError, IndexError) as e:
                failures.append(f"{self.endpoints[index]}: {e}")
                continue
            answer: dict[str, Any] = json.loads(line)
            if "error" in answer:  # a member without quorum answers with an error
                failures.append(f"{self.endpoints[index]}: {answer['error']}")
                continue
            self._preferred = index
            return answer
        raise EtcdUnavailable("etcd unavailable: " + "; ".join(failures))

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        return int(self._post("/v3/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh ``lease``; its remaining TTL in seconds (0: it expired)."""
        result = self._post("/v3/lease/keepalive", {"ID": str(lease)}).get("result", {})
        return int(result.get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self._post("/v3/lease/revoke", {"ID": str(lease)})

    def create(self, key: str, value: str, lease: int) -> tuple[bool, int]:
        """Put ``key`` only if it does not exist; (created, the key's create revision)."""
        k = _b64(key)
        answer = self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
                ],
                "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"request_range": {"key": k}}],
            },
        )
        if answer.get("succeeded"):
            return True, int(answer["header"]["revision"])
        holder = self._holder(answer["responses"][0]["response_range"])
        return False, 0 if holder is None else holder.create_revision

    def put(self, key: str, value: str, lease: int) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease)})

    def values_under(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix`` and its value."""
        raw = prefix.encode()
        end = raw[:-1] + bytes([raw[-1] + 1])  # the first key past the prefix
        answer = self._post(
            "/v3/kv/range",
            {"key": _b64(prefix), "range_end": base64.b64encode(end).decode()},
        )
        return {
            base64.b64decode(kv["key"]).decode(errors="replace"): base64.b64decode(
                kv.get("value", "")
            ).decode(errors="replace")
            for kv in answer.get("kvs") or []
        }

    def get(self, key: str) -> Holder | None:
        return self._holder(self._post("/v3/kv/range", {"key": _b64(key)}))

    @staticmethod
    def _holder(ranged: dict[str, Any]) -> Holder | None:
        kvs = ranged.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        value = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        return Holder(value, int(kv.get("lease", 0)), int(kv["create_revision"]))
