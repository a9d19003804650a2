"""What a step sees while it runs: ``StepContext``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aws_lambda_powertools import Logger

from stepchain.exceptions import ContinueInNewInvocation, ValidationError
from stepchain.records import EachRecord

if TYPE_CHECKING:
    from stepchain.engine import Engine

T = TypeVar("T")
R = TypeVar("R")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "stepchain"))

#: the smallest safety margin kept free at the end of an invocation, in ms
MIN_MARGIN_MS = 1_000


class LambdaContextLike(Protocol):
    """The part of the Lambda context object stepchain uses."""

    @property
    def aws_request_id(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


class Probe(Protocol):
    """Observer of named boundaries (the test harness injects crashes and counts executions here)."""

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None: ...


class NoProbe:
    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        return None


@dataclass
class CostMeter:
    usd_nano: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


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
    _engine: Engine
    cost: CostMeter = field(default_factory=CostMeter)
    margin_ms: int = MIN_MARGIN_MS
    #: ``ctx.each`` items checkpointed by this invocation (each invocation gets a fresh context)
    _items_done: int = field(default=0, init=False)

    @property
    def logger(self) -> Logger:
        """A Powertools logger; records carry ``run_id`` and ``step``."""
        logger.thread_safe_append_keys(run_id=self.run_id, step=self.key, attempt=self.attempt)
        return logger

    @property
    def idempotency_key(self) -> str:
        """Stable across retries, crashes and continuations of this step: pass it to external APIs."""
        return f"{self.run_id}:{self.key}"

    def remaining_ms(self) -> int:
        return int(self.lambda_context.get_remaining_time_in_millis())

    def record_cost(self, *, usd: float = 0.0, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Attribute money and tokens (e.g. an LLM call) to this step in the run ledger."""
        if usd < 0 or input_tokens < 0 or output_tokens < 0:
            raise ValidationError("record_cost takes non-negative amounts")
        self.cost.usd_nano += round(usd * 1e9)
        self.cost.input_tokens += input_tokens
        self.cost.output_tokens += output_tokens

    def output_of(self, step: str) -> Any:
        """The checkpointed output of an earlier node of this run."""
        return self._engine.output_of(self.run_id, step)

    def once(self, name: str, fn: Callable[[], R]) -> R:
        """Run ``fn`` once per run for this step and ``name``; later calls return the stored result.

        The result is checkpointed right after ``fn`` returns. For an external effect whose
        acknowledgement could be lost in a crash, also pass ``self.idempotency_key + name`` to the
        provider so a repeat is deduplicated on its side.
        """
        engine = self._engine
        stored = engine.store.get_once(self.run_id, self.key, name)
        if stored is not None:
            return engine.codec.decode(stored)  # type: ignore[no-any-return]
        value = fn()
        engine.probe.reached("once_executed", self.run_id, self.key, name)
        ref = engine.codec.encode(value, scope=f"{self.run_id}/{self.key}/once")
        winner = engine.store.put_once(self.run_id, self.key, name, ref, engine.clock.now_ms())
        engine.probe.reached("once_checkpointed", self.run_id, self.key, name)
        return engine.codec.decode(winner)  # type: ignore[no-any-return]

    def each(self, items: Sequence[T], fn: Callable[[T], R], *, name: str = "each") -> list[R]:
        """Apply ``fn`` to every item, checkpointing each result as it is produced.

        Resumes after the last checkpointed item. Before starting an item, if the time left in
        this invocation is below a margin learned from the items seen so far (1.5x the slowest,
        plus ``margin_ms``), it stops and the step continues in a fresh invocation. An invocation that
        has not checkpointed an item yet always tries one, so the step progresses even when the margin
        exceeds a whole invocation's budget (an item longer than that budget ends in a timeout).
        """
        engine = self._engine
        clock = engine.clock
        done = engine.store.list_each(self.run_id, self.key, name)
        results: dict[int, Any] = {r.index: engine.codec.decode(r.value_ref) for r in done}
        slowest = max((r.duration_ms for r in done), default=0)
        for i, item in enumerate(items):
            if i in results:
                continue
            needed = self.margin_ms + int(1.5 * slowest)
            if self._items_done > 0 and self.remaining_ms() < needed:
                raise ContinueInNewInvocation(
                    f"{self.remaining_ms()} ms left, next item needs ~{needed} ms ({i}/{len(items)} done)"
                )
            engine.probe.reached("mid_item", self.run_id, self.key, f"{name}:{i}")
            t0 = clock.monotonic_ms()
            value = fn(item)
            took = int(clock.monotonic_ms() - t0)
            engine.probe.reached("item_executed", self.run_id, self.key, f"{name}:{i}")
            ref = engine.codec.encode(value, scope=f"{self.run_id}/{self.key}/{name}")
            engine.store.put_each(self.run_id, self.key, name, EachRecord(i, ref, took, clock.now_ms()))
            engine.probe.reached("item_checkpointed", self.run_id, self.key, f"{name}:{i}")
            results[i] = value
            slowest = max(slowest, took)
            self._items_done += 1
        return [results[i] for i in range(len(items))]


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
