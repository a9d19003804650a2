"""The storage primitives under the checkpoint store: what an adapter implements.

An item is a plain dict of stored fields with its keys ``pk`` (the partition: one run) and ``sk``
(the item in it). Above these primitives, :class:`~stepchain.store.base.CheckpointStore` writes
every decision once (the record <-> item codecs, the change -> field tables, conflict handling);
an adapter only stores items, tests a :class:`Cond` and applies an :class:`Update`, each call
ONE atomic operation (one DynamoDB request; one locked dict update in memory). This is the shape
of Powertools' idempotency ``BasePersistenceLayer``: shared decisions above a few primitives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepchain.store.changes import RunPage
    from stepchain.store.records import RunStatus

#: a condition's comparisons: ``(field, op, value)`` with op ``"="``, ``"<"``, ``">"``, ``"in"`` (value a tuple),
#: ``"missing"`` (the field is absent; value unused) or ``"any"`` (field unused; value a tuple of
#: clauses, one of which holds)
Clause = tuple[str, str, Any]


@dataclass(frozen=True)
class Cond:
    """A condition on one item. ``absent``: True, the item may be absent (else its clauses hold;
    with no clauses: put-if-absent); False, it must exist and its clauses hold; None, no existence
    test (an absent item fails any clause, and passes when there is none)."""

    absent: bool | None = None
    clauses: tuple[Clause, ...] = ()

    def holds(self, item: dict[str, Any] | None) -> bool:
        if item is None:
            return self.absent is True or (self.absent is None and not self.clauses)
        if self.absent is True and not self.clauses:
            return False
        return all(_holds(item, c) for c in self.clauses)


def _holds(item: dict[str, Any], clause: Clause) -> bool:
    name, op, value = clause
    if op == "any":
        return any(_holds(item, c) for c in value)
    if op == "missing":
        return name not in item
    if name not in item:
        return False
    have = item[name]
    if op == "=":
        return bool(have == value)
    if op == "<":
        return bool(have < value)
    if op == ">":
        return bool(have > value)
    return have in value


ABSENT = Cond(absent=True)  # put-if-absent
EXISTS = Cond(absent=False)


@dataclass
class Update:
    """What a conditional update does to an item: fields SET, SET unless present (``inits``,
    DynamoDB's ``if_not_exists``), counters ADDed, fields REMOVEd. No field appears twice."""

    sets: dict[str, Any] = field(default_factory=dict)
    inits: dict[str, Any] = field(default_factory=dict)
    adds: dict[str, int] = field(default_factory=dict)
    removes: list[str] = field(default_factory=list)

    def apply(self, item: dict[str, Any]) -> None:
        """Apply it to a dict (the in-memory adapter; what DynamoDB does with the expression)."""
        for name in self.removes:
            item.pop(name, None)
        item.update(self.sets)
        for name, value in self.inits.items():
            item.setdefault(name, value)
        for name, inc in self.adds.items():
            item[name] = item.get(name, 0) + inc


@dataclass(frozen=True)
class TxUpdate:
    """An update in a transaction (:meth:`StorePort._transact`): ``update`` applied to the item
    ``(pk, sk)`` if ``cond`` holds (created when absent and ``cond`` allows)."""

    pk: str
    sk: str
    update: Update
    cond: Cond


#: one write of a transaction: a put ``(item, cond)`` or an update
TxWrite = tuple[dict[str, Any], Cond] | TxUpdate


class StorePort(ABC):
    """The primitives (at most 10 abstract methods; ``tests/functional/test_store_contract.py``
    counts them). ``_put``/``_update`` return ``(done, item)``: the item is the stored one (new on
    ``return_new``, replaced on ``return_old``) or, when the condition failed and ``old_on_failure``,
    the item as it is (DynamoDB's ``ReturnValuesOnConditionCheckFailure=ALL_OLD``: no second read)."""

    #: seconds a finished run's items are kept (TTL); None keeps them forever
    retention_s: int | None = None

    def expires_at(self, now_ms: int) -> int | None:
        return None if self.retention_s is None else now_ms // 1000 + self.retention_s

    @abstractmethod
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One consistent read of an item."""

    @abstractmethod
    def _put(
        self, item: dict[str, Any], cond: Cond | None = None, *, return_old: bool = False, old_on_failure: bool = False
    ) -> tuple[bool, dict[str, Any] | None]:
        """Write the whole item (fields that are None are left out) if ``cond`` holds."""

    @abstractmethod
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
        """Apply ``update`` to the item (created when absent and ``cond`` allows) if ``cond`` holds."""

    @abstractmethod
    def _query(
        self, pk: str, prefix: str, *, newest_first: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The partition's items whose ``sk`` starts with ``prefix``, by ``sk`` (all pages); with
        ``after``, only those whose ``sk`` sorts after it."""

    @abstractmethod
    def _transact(self, writes: Sequence[TxWrite]) -> tuple[int, dict[str, Any] | None] | None:
        """Every write or none (one DynamoDB TransactWriteItems): a put ``(item, cond)`` or a
        :class:`TxUpdate`. None when written, else the index of the first write whose condition
        failed and the item that made it fail."""

    @abstractmethod
    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        """The workflow's runs, newest first; with ``owner`` only that caller's (one index query)."""

    @abstractmethod
    def list_active_runs(self, *, limit: int = 100, cursor: str | None = None) -> RunPage:
        """Runs of every workflow the sweeper must look at: PENDING/RUNNING/WAITING, and CANCELLED
        until their cancel finished (``RunChanges.settled``). A sparse index (the RUN items that
        carry ``active_pk``): reads no finished run."""


__all__ = ["ABSENT", "EXISTS", "Clause", "Cond", "StorePort", "TxUpdate", "TxWrite", "Update"]
