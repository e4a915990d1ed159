"""The Elasticsearch returner: documents into ``PREFIX-events``, ``PREFIX-returns`` and
``PREFIX-reactions`` with the official client's bulk helper.

Each document is written with ``create`` under its stable id: a batch sent again after a
lost answer finds its documents already there (409, taken as stored), so each arrives once.
An index template (``PREFIX``, for ``PREFIX-*``) is put before the first batch: dates as
dates, saline's free-form ``data`` not mapped field by field (one event's keys must not
become every index's fields), the return's ``ret`` as text.
"""

from typing import Any

import elastic_transport
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import streaming_bulk

from master.returners.base import Doc, Shipped, Unavailable

#: per document: these statuses mean "later", any other 4xx "never"
_RETRY = {429, 500, 502, 503, 504}

TEMPLATE: dict[str, Any] = {
    "settings": {"number_of_shards": 1},
    "mappings": {
        "dynamic": True,
        "properties": {
            "@timestamp": {"type": "date"},
            "event": {
                "properties": {
                    "kind": {"type": "keyword"},
                    "dataset": {"type": "keyword"},
                    "outcome": {"type": "keyword"},
                    "id": {"type": "keyword"},
                    "duration": {"type": "long"},
                }
            },
            "host": {"properties": {"name": {"type": "keyword"}}},
            "rule": {"properties": {"name": {"type": "keyword"}}},
            "saline": {
                "properties": {
                    "tag": {"type": "keyword"},
                    "seq": {"type": "long"},
                    "jid": {"type": "keyword"},
                    "fun": {"type": "keyword"},
                    "rule": {"type": "keyword"},
                    "verdict": {"type": "keyword"},
                    "reason": {"type": "text"},
                    "data": {"type": "object", "enabled": False},
                    "ret": {"type": "text", "index": False},
                }
            },
        },
    },
}


class ElasticsearchReturner:
    def __init__(
        self,
        name: str,
        hosts: list[str],
        index_prefix: str = "saline",
        timeout: float = 10.0,
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.name = name
        self.prefix = index_prefix
        auth = (username, password or "") if username else None
        tls: dict[str, Any] = {"ca_certs": ca_certs} if ca_certs else {}
        self.client = Elasticsearch(
            hosts, request_timeout=timeout, basic_auth=auth, max_retries=0, **tls
        )
        self._templated = False

    def index(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"

    def _template(self) -> None:
        if self._templated:
            return
        self.client.indices.put_index_template(
            name=self.prefix,
            index_patterns=[f"{self.prefix}-*"],
            template=TEMPLATE,
            meta={"managed_by": "saline"},
        )
        self._templated = True

    def ship(self, docs: list[Doc]) -> Shipped:
        actions = [
            {"_op_type": "create", "_index": self.index(d.kind), "_id": d.id, "_source": d.body}
            for d in docs
        ]
        shipped = Shipped()
        try:
            self._template()
            for _ok, item in streaming_bulk(
                self.client,
                actions,
                chunk_size=max(len(actions), 1),
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=0,
            ):
                result = next(iter(item.values()))
                doc_id, status = str(result.get("_id")), int(result.get("status", 0))
                if status < 300 or status == 409:  # created, or there from an earlier try
                    shipped.done.append(doc_id)
                elif status not in _RETRY:
                    error = result.get("error") or {}
                    reason = error.get("reason") if isinstance(error, dict) else str(error)
                    shipped.refused[doc_id] = f"{status}: {reason}"
        except (elastic_transport.TransportError, ApiError) as e:
            raise Unavailable(f"Elasticsearch: {type(e).__name__}: {str(e)[:300]}") from e
        return shipped

    def close(self) -> None:
        self.client.close()
