"""Step-local operations on the store port, written once for every adapter: ``ctx.each``
iterations (``E#`` items), ``ctx.once`` effects (``O#``), buffered events (``V#``) and spent
approval tokens (``T#``). Each operation is ONE primitive call (one DynamoDB request).

``loop`` / ``name`` is the operation id (see ``stepchain.define.steplocal``); ``generation`` the node's
progress generation (a discarding redrive starts a new one; old items expire by TTL)."""

from __future__ import annotations

from typing import Any

from stepchain.store.access import token_sk
from stepchain.store.port import ABSENT, Cond, StorePort
from stepchain.store.records import (
    EachRecord,
    OnceStart,
    OnceState,
    each_done_sk,
    each_prefix,
    each_sk,
    event_sk,
    once_sk,
    parse_each_sk,
    run_pk,
)

#: a ``ctx.once`` item may be (re)written while it is absent or only a started marker
_ONCE_OPEN = Cond(absent=True, clauses=(("state", "=", OnceState.STARTED.value),))


def _each_record(item: dict[str, Any]) -> EachRecord:
    _, gen, loop, _ = parse_each_sk(str(item["sk"]))
    return EachRecord.from_item(item, loop, gen)


class StepLocalStore(StorePort):
    """The step-local half of :class:`~stepchain.store.base.CheckpointStore`."""

    def put_each(self, run_id: str, key: str, loop: str, rec: EachRecord, *, generation: int = 0) -> bool:
        """Checkpoint one item (or, ``rec.complete``, the loop's summary) unless it is there (one conditional write)."""
        sk = each_done_sk(key, loop, generation) if rec.complete else each_sk(key, loop, rec.index, generation)
        item = {"pk": run_pk(run_id), "sk": sk, **rec.to_item(), "expires_at": self.expires_at(rec.ended_ms)}
        return self._put(item, ABSENT)[0]

    def last_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> EachRecord | None:
        """The loop's summary if it has one, else its checkpointed item with the highest index: ONE
        item read (a resume costs O(1)). ``list_each``/``list_each_all`` return items only."""
        items = self._query(run_pk(run_id), each_prefix(key, loop, generation), newest_first=True, limit=1)
        return _each_record(items[0]) if items else None

    def list_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> list[EachRecord]:
        recs = [_each_record(i) for i in self._query(run_pk(run_id), each_prefix(key, loop, generation))]
        return [r for r in recs if not r.complete]

    def list_each_all(self, run_id: str) -> dict[str, list[EachRecord]]:
        """Every ``ctx.each`` checkpoint of the run, keyed by node key (for the ledger)."""
        out: dict[str, list[EachRecord]] = {}
        for item in self._query(run_pk(run_id), "E#"):
            rec = _each_record(item)
            if not rec.complete:
                out.setdefault(parse_each_sk(str(item["sk"]))[0], []).append(rec)
        return out

    def get_once(self, run_id: str, key: str, name: str, *, generation: int = 0) -> str | None:
        """The effect's checkpointed result (``None`` when absent or only started)."""
        item = self._get(run_pk(run_id), once_sk(key, name, generation))
        return None if item is None or "value" not in item else str(item["value"])

    def start_once(
        self, run_id: str, key: str, name: str, *, owner: str, now_ms: int, generation: int = 0
    ) -> OnceStart:
        """ONE conditional write: put the in-progress marker if absent or still in progress.

        A checkpointed result comes back with the failure (no read); a replaced marker comes back
        as ``restarted`` (an earlier attempt started the effect and never checkpointed it).
        """
        item = {
            "pk": run_pk(run_id),
            "sk": once_sk(key, name, generation),
            "state": OnceState.STARTED.value,
            "owner": owner,
            "at": now_ms,
            "expires_at": self.expires_at(now_ms),
        }
        written, old = self._put(item, _ONCE_OPEN, return_old=True, old_on_failure=True)
        if not written:
            if old is None:  # no item came back (should not happen): read the result
                return OnceStart(done_ref=self.get_once(run_id, key, name, generation=generation))
            return OnceStart(done_ref=str(old["value"]))
        if old is None:
            return OnceStart()
        return OnceStart(restarted=True, previous_owner=old.get("owner"))

    def put_once(self, run_id: str, key: str, name: str, value_ref: str, now_ms: int, *, generation: int = 0) -> str:
        """Store the effect's result unless one is there; return the stored one."""
        item = {
            "pk": run_pk(run_id),
            "sk": once_sk(key, name, generation),
            "state": OnceState.DONE.value,
            "value": value_ref,
            "at": now_ms,
            "expires_at": self.expires_at(now_ms),
        }
        written, old = self._put(item, _ONCE_OPEN, old_on_failure=True)
        if written:
            return value_ref
        if old is not None:
            return str(old["value"])
        stored = self.get_once(run_id, key, name, generation=generation)
        return value_ref if stored is None else stored

    def put_event(self, run_id: str, name: str, payload_ref: str, now_ms: int) -> bool:
        item = {"pk": run_pk(run_id), "sk": event_sk(name), "value": payload_ref, "at": now_ms}
        return self._put({**item, "expires_at": self.expires_at(now_ms)}, ABSENT)[0]

    def get_event(self, run_id: str, name: str) -> str | None:
        item = self._get(run_pk(run_id), event_sk(name))
        return None if item is None else str(item["value"])

    def spend_token(self, run_id: str, token_id: str, now_ms: int, expires_at: int) -> bool:
        """Record an approval token as used (ONE conditional put); ``False`` if it was used before."""
        item = {"pk": run_pk(run_id), "sk": token_sk(token_id), "at": now_ms, "expires_at": expires_at}
        return self._put(item, ABSENT)[0]


__all__ = ["StepLocalStore"]
