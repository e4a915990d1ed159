"""The stand-in Elasticsearch's documents: what a returner writes, answered as Elasticsearch
answers (``_bulk`` items with their status, ``create`` conflicts as 409, bad index names as
400 ``invalid_index_name_exception``), kept in memory across a stop and start of the server
so a test can take it away and bring it back.
"""

import json
import re
import threading
from collections import Counter
from typing import Any

_INDEX_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,254}$")


def error(kind: str, reason: str, status: int) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class Documents:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: index -> id -> source
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        #: (index, id) -> times a write stored it (1 for every document, if all is well)
        self.writes: Counter[tuple[str, str]] = Counter()
        self.templates: dict[str, dict[str, Any]] = {}
        self.bulk_requests = 0

    def put_template(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not isinstance(body.get("index_patterns"), list | str):
            reason = "index patterns are missing"
            return 400, error("action_request_validation_exception", reason, 400)
        with self._lock:
            self.templates[name] = body
        return 200, {"acknowledged": True}

    def bulk(self, payload: bytes) -> tuple[int, dict[str, Any]]:
        lines = [line for line in payload.split(b"\n") if line.strip()]
        items: list[dict[str, Any]] = []
        try:
            pairs = []
            i = 0
            while i < len(lines):
                action = json.loads(lines[i])
                [(op, meta)] = action.items()
                source = None
                if op != "delete":
                    source = json.loads(lines[i + 1])
                    i += 1
                pairs.append((op, meta, source))
                i += 1
        except (ValueError, IndexError) as e:
            return 400, error("x_content_parse_exception", f"malformed bulk body: {e}", 400)
        with self._lock:
            self.bulk_requests += 1
            for op, meta, source in pairs:
                items.append({op: self._one(op, meta, source)})
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def _one(self, op: str, meta: dict[str, Any], source: Any) -> dict[str, Any]:
        index, doc_id = str(meta.get("_index", "")), str(meta.get("_id", ""))
        head = {"_index": index, "_id": doc_id}
        if not _INDEX_RE.match(index):
            reason = f"Invalid index name [{index}], must be lowercase"
            return {
                **head,
                "status": 400,
                "error": error("invalid_index_name_exception", reason, 400)["error"],
            }
        if op not in ("create", "index") or not isinstance(source, dict):
            reason = f"unsupported bulk operation [{op}]"
            return {
                **head,
                "status": 400,
                "error": error("illegal_argument_exception", reason, 400)["error"],
            }
        docs = self.indices.setdefault(index, {})
        if op == "create" and doc_id in docs:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            failure = error("version_conflict_engine_exception", reason, 409)["error"]
            return {**head, "status": 409, "error": {**failure, "index": index}}
        docs[doc_id] = source
        self.writes[(index, doc_id)] += 1
        return {**head, "_version": 1, "result": "created", "status": 201}

    def get(self, index: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            source = self.indices.get(index, {}).get(doc_id)
        if source is None:
            return 404, {"_index": index, "_id": doc_id, "found": False}
        return 200, {
            "_index": index,
            "_id": doc_id,
            "_version": 1,
            "found": True,
            "_source": source,
        }

    def count(self, index: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if index not in self.indices:
                reason = f"no such index [{index}]"
                return 404, error("index_not_found_exception", reason, 404)
            return 200, {"count": len(self.indices[index])}
