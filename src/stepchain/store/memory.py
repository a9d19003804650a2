"""In-memory checkpoint store: the same contract as DynamoDB, for tests and the embedded runtime.

Only the port's primitives live here (a dict behind a lock); every operation and every change
table is :class:`~stepchain.store.base.CheckpointStore`'s, shared with the DynamoDB adapter."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from stepchain.store.base import CheckpointStore, RunPage
from stepchain.store.items import ACTIVE_PK
from stepchain.store.port import Cond, TxUpdate, TxWrite, Update
from stepchain.store.records import RUN_SK, RunRecord, RunStatus

Key = tuple[str, str]


class MemoryStore(CheckpointStore):
    """A dict behind a lock. Every primitive is atomic, like one DynamoDB call. Items are stored
    under their ``(pk, sk)`` without those two fields."""

    def __init__(self, retention_s: int | None = None) -> None:
        self._items: dict[Key, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.retention_s = retention_s
        self.calls = 0

    def _read(self, key: Key) -> dict[str, Any] | None:
        item = self._items.get(key)
        return None if item is None else {**copy.deepcopy(item), "pk": key[0], "sk": key[1]}

    def _write(self, item: dict[str, Any], *, fresh: bool = False) -> None:
        """Store ``item`` (a copy of it unless it is ``fresh``: built for this write, shared with no caller)."""
        stored = {
            k: v if fresh else copy.deepcopy(v) for k, v in item.items() if v is not None and k not in ("pk", "sk")
        }
        self._items[(item["pk"], item["sk"])] = stored

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls += 1
            return self._read((pk, sk))

    def _put(
        self, item: dict[str, Any], cond: Cond | None = None, *, return_old: bool = False, old_on_failure: bool = False
    ) -> tuple[bool, dict[str, Any] | None]:
        with self._lock:
            self.calls += 1
            old = self._read((item["pk"], item["sk"]))
            if cond is not None and not cond.holds(old):
                return False, old if old_on_failure else None
            self._write(item)
            return True, old if return_old else None

    def _update(
        self,
        pk: str,
        sk: str,
        update: Update,
        cond: Cond | None = None,
        *,
        return_new: bool = False,
        old_on_failure: bool = False,
    ) -> tuple[bool, dict[str, Any] | None]:
        with self._lock:
            self.calls += 1
            old = self._read((pk, sk))
            if cond is not None and not cond.holds(old):
                return False, old if old_on_failure else None
            item = old or {"pk": pk, "sk": sk}
            update.apply(item)
            self._write(item, fresh=True)
            return True, self._read((pk, sk)) if return_new else None

    def _query(
        self, pk: str, prefix: str, *, newest_first: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            self.calls += 1
            keys = sorted(
                k for k in self._items if k[0] == pk and k[1].startswith(prefix) and (after is None or k[1] > after)
            )
            if newest_first:
                keys.reverse()
            return [item for k in keys[:limit] if (item := self._read(k)) is not None]

    def _transact(self, writes: Sequence[TxWrite]) -> tuple[int, dict[str, Any] | None] | None:
        with self._lock:
            self.calls += 1
            for i, w in enumerate(writes):
                key, cond = ((w.pk, w.sk), w.cond) if isinstance(w, TxUpdate) else ((w[0]["pk"], w[0]["sk"]), w[1])
                old = self._read(key)
                if not cond.holds(old):
                    return i, old
            for w in writes:
                if isinstance(w, TxUpdate):
                    item = self._read((w.pk, w.sk)) or {"pk": w.pk, "sk": w.sk}
                    w.update.apply(item)
                    self._write(item, fresh=True)
                else:
                    self._write(w[0])
            return None

    # -- index queries (each adapter has its own cursor) --------------------------------------------
    def _runs(self, *, active: bool = False) -> list[RunRecord]:
        with self._lock:
            self.calls += 1
            keys = [k for k, v in self._items.items() if k[1] == RUN_SK and (not active or ACTIVE_PK in v)]
            return [RunRecord.from_item(item) for k in keys if (item := self._read(k)) is not None]

    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        runs = [r for r in self._runs() if r.workflow == workflow and (owner is None or r.owner == owner)]
        runs.sort(key=lambda r: (r.created_ms, r.run_id), reverse=True)
        if cursor is not None:
            created, run_id = cursor.split(":", 1)
            runs = [r for r in runs if (r.created_ms, r.run_id) < (int(created), run_id)]
        if status is not None:
            runs = [r for r in runs if r.status is status]
        page = runs[:limit]
        more = len(runs) > limit
        return RunPage(page, f"{page[-1].created_ms}:{page[-1].run_id}" if more and page else None)

    def list_active_runs(self, *, limit: int = 100, cursor: str | None = None) -> RunPage:
        runs = sorted(self._runs(active=True), key=lambda r: r.run_id)
        if cursor is not None:
            runs = [r for r in runs if r.run_id > cursor]
        page = runs[:limit]
        return RunPage(page, page[-1].run_id if len(runs) > limit and page else None)
