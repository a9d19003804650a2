"""Step-local durable operations: ``ctx.each`` and ``ctx.once`` (``StepContext`` delegates here).

Identity by position
    Every ``each``/``once`` call gets an operation id from its call order within its scope. The
    top-level scope is the node key (a map item has its own); inside an ``each`` item function the
    scope is that ``each`` operation plus the item's index. An unnamed ``each`` gets ``@<n>`` (its
    position, counting every operation of the scope); a name (``each(..., name=)``, ``once(name,
    ...)``) is used as given, and a name used twice in one scope of one invocation is an
    :class:`~stepchain.exceptions.OperationNameReused` error. Ids nest with ``/``: the ``once("charge")``
    inside item 3 of the step's first unnamed ``each`` is ``@1/3/charge``.

``each``
    One conditional put per item; a resume reads only the last checkpointed item (which carries the
    slowest item so far and a fingerprint of its item) and, once the loop is complete, all of them
    once. After an item checkpoint it reads the run's status at most once per second (of the step's
    clock) and stops the step if the run was cancelled.

``once``
    An in-progress marker (one conditional write that returns a checkpointed result instead, with
    no read), then the effect, then its result (one conditional write). A marker left by an earlier
    attempt means the effect may have happened: ``reconcile()`` decides, else the effect runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger

from stepchain.define.step_state import CostMeter, StepServices
from stepchain.exceptions import (
    ContinueInNewInvocation,
    EachItemsChanged,
    OperationNameReused,
    StepCancelled,
    ValidationError,
)
from stepchain.logs import LambdaContextLike
from stepchain.store.payloads import _json_default
from stepchain.store.records import EachRecord, RunStatus
from stepchain.store.stream import EmitBuffer

T = TypeVar("T")
R = TypeVar("R")

#: explicit operation names: safe inside a sort key, never mistaken for a positional id (``@<n>``)
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: a running ``each`` reads the run's status (to notice a cancel) at most this often
CANCEL_CHECK_INTERVAL_MS = 1_000


def fingerprint(item: Any) -> str | None:
    """A short hash of the item's JSON, or ``None`` when it is not JSON-serializable."""
    try:
        data = json.dumps(item, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(data.encode()).hexdigest()[:16]


class Scopes:
    """Operation ids of one invocation: the current scope, a call counter and the names used per scope."""

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._counters: dict[str, int] = {}
        self._names: dict[str, set[str]] = {}

    @property
    def current(self) -> str:
        """``""`` at the top of the step, else the path of the innermost ``each`` item or ``once``."""
        return self._stack[-1] if self._stack else ""

    def next_id(self, name: str | None, what: str) -> str:
        scope = self.current
        n = self._counters.get(scope, 0) + 1
        self._counters[scope] = n
        if name is None:
            op = f"@{n}"
        else:
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise ValidationError(f"{what} name {name!r} must match {NAME_RE.pattern}")
            used = self._names.setdefault(scope, set())
            if name in used:
                where = f"scope {scope!r}" if scope else "this step"
                raise OperationNameReused(
                    f"{what} name {name!r} is used twice in {where}: every ctx.each/ctx.once needs its own "
                    "name (or none: unnamed operations are identified by their position)"
                )
            used.add(name)
            op = name
        return f"{scope}/{op}" if scope else op

    @property
    def open_scopes(self) -> tuple[str, ...]:
        return tuple(self._stack)

    @contextmanager
    def inside(self, scope: str) -> Iterator[None]:
        self._stack.append(scope)
        try:
            yield
        finally:
            self._stack.pop()


class OpContext(Protocol):
    """What the step-local operations read and update of the step's context
    (:class:`stepchain.define.context.StepContext` has it; named here so this module does not import it)."""

    @property
    def run_id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def margin_ms(self) -> int: ...
    @property
    def lambda_context(self) -> LambdaContextLike: ...
    @property
    def logger(self) -> Logger: ...
    @property
    def cost(self) -> CostMeter: ...
    @property
    def _services(self) -> StepServices: ...
    @property
    def _ops(self) -> Scopes: ...
    @property
    def has_emits(self) -> bool: ...
    @property
    def stream_lifecycle(self) -> bool: ...
    @property
    def emits(self) -> EmitBuffer: ...

    _items_done: int
    _cancel_checked_ms: int
    _effect_restarted: bool
    _each_completed: dict[str, tuple[str, Sequence[Any], list[Any], int]]
    _op_task: object | None

    def remaining_ms(self) -> int: ...


def _check_resume(op: str, last: EachRecord, items: Sequence[Any]) -> None:
    if last.index >= len(items):
        raise EachItemsChanged(
            f"ctx.each {op!r} has {len(items)} items, but item {last.index} was checkpointed earlier: "
            "the items changed (a redrive with a new input discards the old progress)"
        )
    _check_item(op, last, items[last.index])


def _check_item(op: str, rec: EachRecord, item: Any) -> None:
    fp = fingerprint(item)
    if rec.fingerprint is not None and fp is not None and fp != rec.fingerprint:
        raise EachItemsChanged(
            f"ctx.each {op!r}: item {rec.index} differs from the one checkpointed earlier at that position"
        )


def check_cancelled(ctx: OpContext) -> None:
    """Stop the step if its run was cancelled (one consistent read, at most once per second)."""
    engine = ctx._services
    now = engine.clock.now_ms()
    if now - ctx._cancel_checked_ms < CANCEL_CHECK_INTERVAL_MS:
        return
    ctx._cancel_checked_ms = now
    run = engine.store.get_run(ctx.run_id)
    if run is not None and run.status is RunStatus.CANCELLED:
        raise StepCancelled(f"run {ctx.run_id} was cancelled")


def _each(ctx: OpContext, items: Sequence[T], name: str | None) -> Generator[T, Any, list[Any]]:
    """The loop of ``ctx.each`` without its item function: it yields each item to run and is sent
    the item's result (or thrown its exception); a sync and an async driver run it."""
    engine = ctx._services
    store, codec, probe, clock = engine.store, engine.codec, engine.probe, engine.clock
    run_id, key, gen = ctx.run_id, ctx.key, ctx.generation
    scope = ctx._ops.current
    op = ctx._ops.next_id(name, "ctx.each")
    last = store.last_each(run_id, key, op, generation=gen)
    if last is not None and last.complete:  # a loop completed earlier: its summary holds every result
        if last.index != len(items) - 1 or last.fingerprint not in (None, fingerprint(list(items))):
            raise EachItemsChanged(f"ctx.each {op!r}: the items differ from the ones of its completed checkpoint")
        ctx.cost.checkpoint_hits += len(items)
        return codec.decode(last.value_ref)  # type: ignore[no-any-return]
    start, slowest = 0, 0
    if last is not None:
        _check_resume(op, last, items)
        start, slowest = last.index + 1, last.slowest_ms
        ctx.cost.checkpoint_hits += start  # items served from their checkpoints, not run again
    results: dict[int, Any] = {}
    for i in range(start, len(items)):
        needed = ctx.margin_ms + int(1.5 * slowest)
        if ctx._items_done > 0 and ctx.remaining_ms() < needed:
            _summarize_completed_loops(ctx)
            raise ContinueInNewInvocation(
                f"{ctx.remaining_ms()} ms left, next item needs ~{needed} ms ({i}/{len(items)} done)"
            )
        detail = f"{op}:{i}"
        probe.reached("mid_item", run_id, key, detail)
        t0 = clock.monotonic_ms()
        with ctx._ops.inside(f"{op}/{i}"):
            value = yield items[i]
        took = int(clock.monotonic_ms() - t0)
        probe.reached("item_executed", run_id, key, detail)
        probe.reached("item_window", run_id, key, detail)
        ref = codec.encode(value, scope=f"{run_id}/{key}/each")
        slowest = max(slowest, took)
        rec = EachRecord(i, ref, took, clock.now_ms(), slowest, fingerprint(items[i]))
        if ctx.has_emits:  # the item's emits are written before its checkpoint: a re-run never repeats it
            ctx.emits.flush_user()
        store.put_each(run_id, key, op, rec, generation=gen)
        probe.reached("item_checkpointed", run_id, key, detail)
        if ctx.stream_lifecycle:  # progress after the checkpoint: batched, written with the next flush
            data = {"each": op, "done": i + 1, "total": len(items)}
            ctx.emits.lifecycle("each", data, f"each|{op}|d{i + 1}", batch=f"each|{op}")
        results[i] = value
        ctx._items_done += 1
        check_cancelled(ctx)
    if start > 0:  # the loop is complete: read the earlier invocations' results, once
        for rec in store.list_each(run_id, key, op, generation=gen):
            if rec.index < start:
                _check_item(op, rec, items[rec.index])
                results[rec.index] = codec.decode(rec.value_ref)
    missing = [i for i in range(len(items)) if i not in results]
    if missing:
        raise EachItemsChanged(f"ctx.each {op!r}: no checkpoint for items {missing[:5]}")
    out = [results[i] for i in range(len(items))]
    if items:
        ctx._each_completed[op] = (scope, items, out, slowest)
    return out


def _summarize_completed_loops(ctx: OpContext) -> None:
    """Before continuing: write a summary of every loop this invocation completed that the next
    invocation runs through again (those of the scopes still open), so it reads one item for each.
    Loops inside items that are already checkpointed are never run again: no summary for them."""
    engine = ctx._services
    open_scopes = {"", *ctx._ops.open_scopes}
    for op, (scope, items, results, slowest) in ctx._each_completed.items():
        if scope in open_scopes:
            ref = engine.codec.encode(results, scope=f"{ctx.run_id}/{ctx.key}/each")
            summary = EachRecord(
                len(items) - 1, ref, 0, engine.clock.now_ms(), slowest, fingerprint(list(items)), complete=True
            )
            engine.store.put_each(ctx.run_id, ctx.key, op, summary, generation=ctx.generation)
    ctx._each_completed.clear()


def _once(
    ctx: OpContext, name: str, fn: Callable[[], Any], reconcile: Callable[[], Any] | None
) -> Generator[Callable[[], Any], Any, Any]:
    """``ctx.once`` without calling its functions: it yields ``reconcile`` or ``fn`` and is sent what
    it returned (or thrown its exception); a sync and an async driver run it."""
    engine = ctx._services
    store, codec, probe, clock = engine.store, engine.codec, engine.probe, engine.clock
    run_id, key, gen = ctx.run_id, ctx.key, ctx.generation
    op = ctx._ops.next_id(name, "ctx.once")
    owner = ctx.owner or ctx.lambda_context.aws_request_id
    start = store.start_once(run_id, key, op, owner=owner, now_ms=clock.now_ms(), generation=gen)
    if start.done_ref is not None:
        ctx.cost.checkpoint_hits += 1
        return codec.decode(start.done_ref)
    value: Any = None
    with ctx._ops.inside(op):
        ctx._effect_restarted = start.restarted
        try:
            if start.restarted:
                if reconcile is not None:
                    value = yield reconcile
                else:
                    ctx.logger.warning(
                        "ctx.once effect started by an earlier attempt was never checkpointed: running it again "
                        "(it may already have happened; pass ctx.idempotency_key to the provider, or a reconcile)",
                        extra={"operation": op, "previous_owner": start.previous_owner},
                    )
            if value is None:
                if start.restarted:  # a real re-run (not one ``reconcile`` answered)
                    ctx.cost.effect_reruns += 1
                value = yield fn
                probe.reached("once_executed", run_id, key, op)
                probe.reached("effect_window", run_id, key, op)
        finally:
            ctx._effect_restarted = False
    ref = codec.encode(value, scope=f"{run_id}/{key}/once")
    if ctx.has_emits:  # the effect's emits are written before its result: a re-run never repeats it
        ctx.emits.flush_user()
    winner = store.put_once(run_id, key, op, ref, clock.now_ms(), generation=gen)
    probe.reached("once_checkpointed", run_id, key, op)
    return codec.decode(winner)


# -- drivers: the same loop and effect, with sync or async user functions ------------------------


def _not_awaitable(value: Any, what: str) -> Any:
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited: no "coroutine was never awaited" warning
        raise ValidationError(
            f"the {what} returned an awaitable: pass an `async def` function (it is awaited inside an "
            "`async def` step), or a plain function"
        )
    return value


def _drive(gen: Generator[Any, Any, Any], call: Callable[[Any], Any]) -> Any:
    """Run a generator core: call ``call(request)`` for each request it yields."""
    try:
        request = next(gen)
        while True:
            try:
                value = call(request)
            except BaseException as exc:  # thrown into the core, which unwinds its scopes
                request = gen.throw(exc)
                continue
            request = gen.send(value)
    except StopIteration as stop:
        return stop.value


async def _drive_async(ctx: OpContext, gen: Generator[Any, Any, Any], call: Callable[[Any], Any]) -> Any:
    """As :func:`_drive`, awaiting what ``call`` returns when it is awaitable. Operations of one step
    run one at a time: their ids come from call order (an operation started from another task while
    one is in progress, e.g. two under ``asyncio.gather``, is a ``ValidationError``)."""
    task = asyncio.current_task()
    if ctx._op_task is not None and ctx._op_task is not task:
        gen.close()
        raise ValidationError(
            "ctx.each/ctx.once of one step must be awaited one at a time (not concurrently, e.g. under "
            "asyncio.gather): their checkpoints are identified by call order"
        )
    outer, ctx._op_task = ctx._op_task, task
    try:
        request = next(gen)
        while True:
            try:
                value = call(request)
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:  # thrown into the core, which unwinds its scopes
                request = gen.throw(exc)
                continue
            request = gen.send(value)
    except StopIteration as stop:
        return stop.value
    finally:
        ctx._op_task = outer


def run_each(ctx: OpContext, items: Sequence[T], fn: Callable[[T], R], name: str | None) -> list[R]:
    return _drive(_each(ctx, items, name), lambda item: _not_awaitable(fn(item), "ctx.each item function"))  # type: ignore[no-any-return]


async def run_each_async(
    ctx: OpContext, items: Sequence[T], fn: Callable[[T], Awaitable[R]], name: str | None
) -> list[R]:
    return await _drive_async(ctx, _each(ctx, items, name), fn)  # type: ignore[no-any-return]


def run_once(ctx: OpContext, name: str, fn: Callable[[], R], reconcile: Callable[[], R | None] | None) -> R:
    return _drive(_once(ctx, name, fn, reconcile), lambda f: _not_awaitable(f(), "ctx.once function"))  # type: ignore[no-any-return]


async def run_once_async(
    ctx: OpContext,
    name: str,
    fn: Callable[[], Awaitable[R]],
    reconcile: Callable[[], Awaitable[R | None] | R | None] | None,
) -> R:
    return await _drive_async(ctx, _once(ctx, name, fn, reconcile), lambda f: f())  # type: ignore[no-any-return]
