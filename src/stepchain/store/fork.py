"""A fork's copies of its source run's checkpoints, on the port's primitives (no new abstract method).

A fork (:mod:`stepchain.engine.fork`) is a new run whose partition first receives copies of the
source's completed node items before the node it starts at. A copy is **by reference**: it holds
the same input/output/state references (inline values, or the keys of S3 objects under their
content hash), never the payloads, and keeps the source item's expiry (``expires_at``), so it never
outlives the S3 objects it names (the bucket's lifecycle expires them on the same retention).

What a copy keeps: status, input, output, state, route, map size, event name, times and progress
generation. What it drops: the lease, the task token, the ledger counters (duration, cost, tokens,
AWS requests, crashes: the source paid them, the fork's totals do not count them again) and the
invocation history (the fork's timeline draws only what the fork ran; the source's page has it).
It carries ``copied_from`` (the source run id).

Copies are written in transactions of at most :data:`COPY_CHUNK` items and :data:`COPY_BYTES`
(DynamoDB's limits are 100 items and 4 MB per ``TransactWriteItems``), before the fork's RUN item
exists: a reader finds no run until the RUN item is written, so a fork that dies half-way leaves
only invisible items that expire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from stepchain.exceptions import StoreConflict
from stepchain.store.access import idem_pk
from stepchain.store.port import ABSENT, Cond, StorePort
from stepchain.store.records import node_sk, run_pk

#: items per copy transaction, and their size (DynamoDB: at most 100 items and 4 MB per
#: TransactWriteItems; a node item with inline payloads may hold ~100 KB)
COPY_CHUNK = 100
COPY_BYTES = 3_000_000

#: the fields of a node item a copy keeps (everything else is the source's ledger or lease)
_KEPT = (
    "key",
    "node",
    "index",
    "status",
    "input",
    "output",
    "state",
    "route",
    "items_total",
    "event_name",
    "created",
    "started",
    "ended",
    "updated",
    "gen",
    "attempts",
    "expires_at",
)


def copy_item(item: dict[str, Any], run_id: str, source_run_id: str, state_ref: str | None = None) -> dict[str, Any]:
    """The copy of node item ``item`` in run ``run_id`` (``state_ref``: an edited state in its place)."""
    out = {k: item[k] for k in _KEPT if k in item}
    out.update(
        pk=run_pk(run_id),
        sk=str(item["sk"]),
        run_id=run_id,
        invocations=0,
        copied_from=source_run_id,
    )
    if state_ref is not None:
        out["state"] = state_ref
    return out


class ForkOps(StorePort):
    """Reading a run's node items and writing a fork's copies of them."""

    def node_items(self, run_id: str) -> list[dict[str, Any]]:
        """Every node (and map item) item of the run, by key: one query (all pages)."""
        return self._query(run_pk(run_id), node_sk(""))

    def idempotent_run(self, workflow: str, key: str, owner: str | None) -> tuple[str, str | None] | None:
        """``(run id, request hash)`` of the run idempotency key ``key`` of ``owner`` made (one read)."""
        item = self._get(idem_pk(workflow, key, owner), "IDEM")
        return None if item is None else (str(item["run_id"]), item.get("request_hash"))

    def put_copies(self, items: Sequence[dict[str, Any]], *, on_chunk: Callable[[int], None] | None = None) -> int:
        """Write the copies (made by :func:`copy_item`), :data:`COPY_CHUNK` per transaction, each
        put-if-absent; ``on_chunk(n)`` after each transaction (n: copies written so far). Returns
        the number of transactions."""
        written = 0
        chunks = _chunks(items)
        for chunk in chunks:
            puts: list[tuple[dict[str, Any], Cond]] = [(item, ABSENT) for item in chunk]
            failed = self._transact(puts)
            if failed is not None:
                raise StoreConflict(f"fork copy {chunk[failed[0]]['sk']!r} exists already")
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(written)
        return len(chunks)


def _chunks(items: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``items`` cut into transactions of at most :data:`COPY_CHUNK` items and :data:`COPY_BYTES`."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for item in items:
        n = len(json.dumps(item, default=str))
        if not out or len(out[-1]) >= COPY_CHUNK or size + n > COPY_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out


__all__ = ["COPY_BYTES", "COPY_CHUNK", "ForkOps", "copy_item"]
