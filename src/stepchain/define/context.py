"""What a step sees while it runs: ``StepContext``."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from aws_lambda_powertools import Logger

from stepchain.define.state import StateBox
from stepchain.define.step_state import CostMeter, StepServices
from stepchain.define.steplocal import Scopes, run_each, run_each_async, run_once, run_once_async
from stepchain.exceptions import StepNotFound, ValidationError
from stepchain.logs import LambdaContextLike, logger
from stepchain.probe import NoProbe, Probe
from stepchain.store.records import NodeRecord, NodeStatus, node_key, parse_node_key
from stepchain.store.stream import EmitBuffer

T = TypeVar("T")
R = TypeVar("R")

#: the smallest safety margin kept free at the end of an invocation, in ms
MIN_MARGIN_MS = 1_000


@dataclass
class StepContext:
    """Handed to every step as its first argument."""

    run_id: str
    workflow: str
    step: str
    key: str
    index: int | None
    attempt: int
    lambda_context: LambdaContextLike
    _services: StepServices
    cost: CostMeter = field(default_factory=CostMeter)
    margin_ms: int = MIN_MARGIN_MS
    #: the node's progress generation (a redrive that discards progress starts a new one)
    generation: int = 0
    #: the lease owner of this invocation (written into ``ctx.once`` in-progress markers)
    owner: str | None = None
    #: the loop iteration this step runs in (0 until a routing step sends the run back)
    iteration: int = 0
    #: the node's invocation number (1 for the first; continuations, crashes and retries add one)
    invocation: int = 1
    #: the run's durable state as this step sees it (None: the workflow declares none, or a map item)
    state_box: StateBox | None = None
    #: the workflow streams lifecycle events (``Workflow(stream_lifecycle=True)``: ``ctx.each`` progress)
    stream_lifecycle: bool = False
    #: ``ctx.each`` items checkpointed by this invocation (each invocation gets a fresh context)
    _items_done: int = field(default=0, init=False)
    _ops: Scopes = field(default_factory=Scopes, init=False)
    _cancel_checked_ms: int = field(default=0, init=False)
    _effect_restarted: bool = field(default=False, init=False)
    #: loops completed by this invocation: op -> (scope, items, results, slowest item ms)
    _each_completed: dict[str, tuple[str, Sequence[Any], list[Any], int]] = field(default_factory=dict, init=False)
    #: the asyncio task running this step's current ``each``/``once`` (async steps run them one at a time)
    _op_task: object | None = field(default=None, init=False)
    _emits: EmitBuffer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._cancel_checked_ms = self._services.clock.now_ms()

    @property
    def logger(self) -> Logger:
        """A Powertools logger; records carry ``run_id`` and ``step``."""
        logger.thread_safe_append_keys(run_id=self.run_id, step=self.key, attempt=self.attempt)
        return logger

    @property
    def idempotency_key(self) -> str:
        """Stable across retries, crashes and continuations: pass it to external APIs.

        At the top of a step it names the step (``<run_id>:<node key>``); inside a ``ctx.once``
        function or a ``ctx.each`` item function it names that operation (``...:<operation id>``),
        so two effects never share a key. A redrive that discards progress adds ``:g<n>``.
        """
        base = f"{self.run_id}:{self.key}" + (f":g{self.generation}" if self.generation else "")
        scope = self._ops.current
        return f"{base}:{scope}" if scope else base

    def idempotency_key_for(self, name: str) -> str:
        """The idempotency key that ``ctx.once(name, ...)`` called here passes as ``ctx.idempotency_key``."""
        base = f"{self.run_id}:{self.key}" + (f":g{self.generation}" if self.generation else "")
        scope = self._ops.current
        return f"{base}:{scope}/{name}" if scope else f"{base}:{name}"

    @property
    def effect_restarted(self) -> bool:
        """True inside a ``ctx.once`` function (or its ``reconcile``) when an earlier attempt started
        this effect and never checkpointed its result: the effect may already have happened."""
        return self._effect_restarted

    @property
    def emits(self) -> EmitBuffer:
        """This invocation's progress-stream buffer (``ctx.emit``; the engine flushes it before the checkpoint)."""
        if self._emits is None:
            s = self._services
            rerun = self.invocation > 1 or self.attempt > 1
            self._emits = EmitBuffer(s.store, self.run_id, self.key, self.generation, s.clock.now_ms, rerun=rerun)
        return self._emits

    @property
    def has_emits(self) -> bool:
        """True once this invocation used the stream buffer."""
        return self._emits is not None

    def emit(self, kind: str, data: Any = None) -> None:
        """Add an event to the run's progress stream (``GET /runs/{id}/stream``, ``h.stream``).

        ``data`` must be JSON-serializable (at most 16 KiB). Emits are buffered: the first one (and any
        at least 200 ms after the last write) writes at once, the rest go with the next such emit or
        with the step's checkpoint. Each has a stable id (its position in its ``each``/``once`` scope),
        so a re-run after a crash or a duplicate delivery never shows a reader the same event twice."""
        self.emits.emit(kind, data, self._ops.current)

    @overload
    def emit_stream(
        self, chunks: AsyncIterable[str], *, kind: str = ..., every: int = ...
    ) -> Coroutine[Any, Any, str]: ...

    @overload
    def emit_stream(self, chunks: Iterable[str], *, kind: str = ..., every: int = ...) -> str: ...

    def emit_stream(self, chunks: Iterable[str] | AsyncIterable[str], *, kind: str = "tokens", every: int = 200) -> Any:
        """Forward an LLM's token stream to the progress stream as ``kind`` events of about ``every``
        characters (``{"text": ...}``) and return the whole text; ``await`` it for an async iterator."""
        if isinstance(chunks, AsyncIterable):
            return self._emit_stream_async(chunks, kind, every)
        parts: list[str] = []
        pending: list[str] = []
        for chunk in chunks:
            parts.append(chunk)
            pending.append(chunk)
            if sum(map(len, pending)) >= every:
                self.emit(kind, {"text": "".join(pending)})
                pending = []
        if pending:
            self.emit(kind, {"text": "".join(pending)})
        return "".join(parts)

    async def _emit_stream_async(self, chunks: AsyncIterable[str], kind: str, every: int) -> str:
        parts: list[str] = []
        pending: list[str] = []
        async for chunk in chunks:
            parts.append(chunk)
            pending.append(chunk)
            if sum(map(len, pending)) >= every:
                self.emit(kind, {"text": "".join(pending)})
                pending = []
        if pending:
            self.emit(kind, {"text": "".join(pending)})
        return "".join(parts)

    @property
    def state(self) -> Any:
        """The run's durable state (the workflow's ``state`` model), with this step's updates so far."""
        if self.state_box is None:
            raise ValidationError(
                f"step {self.key!r} has no durable state: its workflow declares none (Workflow(state=...)), "
                "or it is a map item (items get their input only)"
            )
        return self.state_box.value

    def update_state(self, **changes: Any) -> Any:
        """Merge ``changes`` into the state (each field by its rule, :mod:`stepchain.define.state`); the
        result is checkpointed with this step's output, exactly once. Returns the new state."""
        if self.state_box is None:
            self.state  # noqa: B018 -- raises the error saying why there is no state
        assert self.state_box is not None
        if self._ops.current:  # a replay serves that function's result from its checkpoint: never re-run
            raise ValidationError(
                f"ctx.update_state inside a ctx.each item or ctx.once function ({self._ops.current}) would be "
                "lost when that result is served from its checkpoint: call it with the result, outside"
            )
        return self.state_box.update(changes)

    def remaining_ms(self) -> int:
        return int(self.lambda_context.get_remaining_time_in_millis())

    def record_cost(self, *, usd: float = 0.0, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Attribute money and tokens (e.g. an LLM call) to this step in the run ledger."""
        if usd < 0 or input_tokens < 0 or output_tokens < 0:
            raise ValidationError("record_cost takes non-negative amounts")
        self.cost.usd_nano += round(usd * 1e9)
        self.cost.input_tokens += input_tokens
        self.cost.output_tokens += output_tokens

    def output_of(self, step: str, *, iteration: int | None = None) -> Any:
        """The checkpointed output of node ``step`` of this run: of its latest iteration at or before
        this step's (inside a loop and after one), or of loop iteration ``iteration``. Raises
        :class:`StepNotFound` when that node has not completed. Costs one read when the node ran in
        this step's iteration (or ``iteration`` is given), else one prefix query on its keys more."""
        rec = self._latest(step, self.iteration if iteration is None else iteration, exact=iteration is not None)
        if rec is None:
            where = f" in iteration {iteration}" if iteration is not None else f" by iteration {self.iteration}"
            raise StepNotFound(f"run {self.run_id!r} has no completed step {step!r}{where}")
        return self._services.codec.decode(rec.output_ref)

    def _latest(self, step: str, iteration: int, *, exact: bool) -> NodeRecord | None:
        store = self._services.store
        rec = store.get_node(self.run_id, node_key(step, None, iteration))
        if rec is not None and rec.status is not NodeStatus.SUCCEEDED:
            rec = None
        if rec is not None or exact or iteration == 0:
            return rec
        done: dict[int, NodeRecord] = {}  # earlier iterations (not map items, not other nodes ``<step>~...``)
        for r in store.list_nodes(self.run_id, f"{step}~"):
            node, it, index = parse_node_key(r.key)
            if node == step and index is None and it < iteration and r.status is NodeStatus.SUCCEEDED:
                done[it] = r
        if done:
            return done[max(done)]
        return self._latest(step, 0, exact=True)

    @overload
    def once(
        self,
        name: str,
        fn: Callable[[], Coroutine[Any, Any, R]],
        *,
        reconcile: Callable[[], Awaitable[R | None] | R | None] | None = None,
    ) -> Coroutine[Any, Any, R]: ...

    @overload
    def once(self, name: str, fn: Callable[[], R], *, reconcile: Callable[[], R | None] | None = None) -> R: ...

    def once(self, name: str, fn: Callable[[], Any], *, reconcile: Callable[[], Any] | None = None) -> Any:
        """Run the effect ``fn`` once for this operation; later calls (retries, continuations) return its result.

        Exactly once when its result was checkpointed. Before ``fn`` runs, an in-progress marker is
        written; if a worker dies after ``fn`` started and before its result was checkpointed, the
        next attempt finds the marker: it calls ``reconcile()`` (return the effect's result if it did
        happen, ``None`` if not) or, without one, runs ``fn`` again and logs a warning
        (``ctx.effect_restarted`` is True meanwhile). Pass ``ctx.idempotency_key`` (the operation's
        own key inside ``fn``) to providers that deduplicate. ``name`` must be unique in its scope.

        In an ``async def`` step, ``fn`` (and ``reconcile``) may be ``async def`` functions:
        ``await ctx.once("charge", charge)``.
        """
        if inspect.iscoroutinefunction(fn):
            _need_event_loop("ctx.once")
            return run_once_async(self, name, fn, reconcile)
        return run_once(self, name, fn, reconcile)

    @overload
    def each(  # type: ignore[overload-overlap]
        self, items: Sequence[T], fn: Callable[[T], Coroutine[Any, Any, R]], *, name: str | None = None
    ) -> Coroutine[Any, Any, list[R]]: ...

    @overload
    def each(self, items: Sequence[T], fn: Callable[[T], R], *, name: str | None = None) -> list[R]: ...

    def each(self, items: Sequence[T], fn: Callable[[T], Any], *, name: str | None = None) -> Any:
        """Apply ``fn`` to every item, checkpointing each result as it is produced.

        Resumes after the last checkpointed item. Before starting an item, if the time left in
        this invocation is below a margin learned from the items seen so far (1.5x the slowest,
        plus ``margin_ms``), it stops and the step continues in a fresh invocation. An invocation that
        has not checkpointed an item yet always tries one, so the step progresses even when the margin
        exceeds a whole invocation's budget (an item longer than that budget ends in a timeout).
        Unnamed loops are identified by their position in the step; ``name`` must be unique in its scope.

        In an ``async def`` step, ``fn`` may be an ``async def`` function: ``await ctx.each(pages, fetch)``
        (items run one after another; operations of one step are awaited one at a time).
        """
        if inspect.iscoroutinefunction(fn):
            _need_event_loop("ctx.each")
            return run_each_async(self, items, fn, name)
        return run_each(self, items, fn, name)


def _need_event_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ValidationError(f"{what} with an `async def` function needs an `async def` step (and `await`)") from None


@dataclass(frozen=True)
class FakeLambdaContext:
    """A Lambda-like context with a fixed deadline (the local worker and the CLI use it)."""

    deadline_ms: float
    aws_request_id: str = "local"
    function_name: str = "local"
    memory_limit_in_mb: int = 512

    @classmethod
    def with_budget(cls, budget_ms: int, request_id: str = "local") -> FakeLambdaContext:
        return cls(time.monotonic() * 1000 + budget_ms, request_id)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - time.monotonic() * 1000))


__all__ = [
    "MIN_MARGIN_MS",
    "CostMeter",
    "FakeLambdaContext",
    "LambdaContextLike",
    "NoProbe",
    "Probe",
    "StepContext",
    "StepServices",
    "logger",
]
