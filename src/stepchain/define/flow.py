"""Flow control a step declares (issue 19): concurrency limits and rate limits by key.

>>> wf = Workflow("agent")
>>> @wf.step(limits=[
...     Concurrency(3, key=lambda ctx, input: input["model"], name="llm"),
...     RateLimit(60, per_s=60, key=lambda ctx, input: input["model"], name="rpm"),
...     RateLimit(90_000, per_s=60, unit="tokens", estimate=2_000, key=lambda ctx, input: input["model"], name="tpm"),
... ])
... def think(ctx, input): ...

A limit is shared by every step (of any workflow) that declares the same ``name`` and computes the
same key: at most ``limit`` activations hold a slot of a :class:`Concurrency` key at a time; a
:class:`RateLimit` key admits at most ``limit`` units (requests, or tokens) per ``per_s`` seconds.
A step over a limit is *throttled*: it waits without a running Lambda and starts when the limit lets
it (:mod:`stepchain.engine.limits`). ``Workflow(limits=...)`` applies limits to each of its steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from stepchain.exceptions import ValidationError

#: ``key(ctx, input) -> str``: the key a limit is counted by (None: one key for every activation)
KeyFn = Callable[[Any, Any], Any]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _check_name(name: str | None) -> None:
    if name is not None and not _NAME.match(name):
        raise ValidationError(f"limit name {name!r} must match [A-Za-z0-9_.:-]{{1,64}}")


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` activations of the key hold a slot at once, across runs and workflows.

    ``name``: the limit's identity (steps sharing it share its slots); default ``<workflow>.<step>``.
    ``poll_s``: how long a throttled step waits before it asks again for a slot. Waiting steps get
    slots in the order they first waited (FIFO per key); ``priority(ctx, input)``: seconds a step
    moves ahead in that queue (negative: back), as Inngest's priority."""

    limit: int
    key: KeyFn | None = None
    name: str | None = None
    poll_s: float = 1.0
    priority: KeyFn | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= 1000:
            raise ValidationError(f"Concurrency limit must be a whole number in 1..1000, got {self.limit!r}")
        if not 0.01 <= self.poll_s <= 900:
            raise ValidationError(f"Concurrency poll_s must be in 0.01..900 s, got {self.poll_s!r}")
        _check_name(self.name)


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` units per ``per_s`` seconds for the key (a token bucket in the table, GCRA).

    ``unit="requests"``: each activation is one unit. ``unit="tokens"``: each activation is charged
    the tokens its step records (``ctx.record_cost(input_tokens=, output_tokens=)``); ``estimate``
    tokens are reserved when it starts and the difference is charged when it ends. ``burst``: units
    that may go at once (default 1: evenly spaced, never more than ``limit`` in any window of
    ``per_s``).

    Without ``priority`` a waiting step reserves its units at once: strictly FIFO per key. With
    ``priority(ctx, input) -> seconds``, a step reserves only a unit that starts within that many
    seconds of now (0 or less: one that starts now) and otherwise asks again when the key's queue has
    come that close, so a step of a higher priority takes units ahead of lower ones that wait (each
    waiting step costs one more activation per try)."""

    limit: int
    per_s: float = 60.0
    key: KeyFn | None = None
    name: str | None = None
    unit: Literal["requests", "tokens"] = "requests"
    estimate: int = 0
    burst: int = 1
    priority: KeyFn | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= 10**12:
            raise ValidationError(f"RateLimit limit must be a whole number >= 1, got {self.limit!r}")
        if not 0.001 <= self.per_s <= 86_400 * 31:
            raise ValidationError(f"RateLimit per_s must be in 0.001..2678400 s, got {self.per_s!r}")
        if self.unit not in ("requests", "tokens"):
            raise ValidationError(f"RateLimit unit must be 'requests' or 'tokens', got {self.unit!r}")
        if not isinstance(self.estimate, int) or self.estimate < 0 or (self.unit == "requests" and self.estimate):
            raise ValidationError("RateLimit estimate is a whole number of tokens >= 0 (unit='tokens' only)")
        if not isinstance(self.burst, int) or not 1 <= self.burst <= self.limit:
            raise ValidationError(f"RateLimit burst must be in 1..limit, got {self.burst!r}")
        _check_name(self.name)

    @property
    def us_per_unit(self) -> float:
        """The emission interval: microseconds of the bucket one unit uses."""
        return self.per_s * 1_000_000 / self.limit

    @property
    def cost(self) -> int:
        """Units reserved when an activation starts."""
        return 1 if self.unit == "requests" else self.estimate

    @property
    def cost_us(self) -> int:
        """Microseconds of the bucket an activation reserves when it starts (:attr:`cost` units)."""
        return round(self.cost * self.us_per_unit)

    @property
    def tolerance_us(self) -> int:
        """How far ahead of now the bucket may run and still start a unit now (``burst - 1`` units)."""
        return round((self.burst - 1) * self.us_per_unit)


Limit = Concurrency | RateLimit


def limits_of(limits: Iterable[Limit] | Limit | None) -> tuple[Limit, ...]:
    """Normalize a ``limits=`` argument; raises ValidationError on anything else."""
    if limits is None:
        return ()
    items = (limits,) if isinstance(limits, Concurrency | RateLimit) else tuple(limits)
    for lim in items:
        if not isinstance(lim, Concurrency | RateLimit):
            raise ValidationError(f"limits takes Concurrency and RateLimit objects, got {lim!r}")
    names = [lim.name for lim in items if lim.name is not None]
    if len(set(names)) != len(names):
        raise ValidationError(f"a step declares the limit names {names} more than once")
    return items


def _numbers(lim: Limit) -> str:
    if isinstance(lim, Concurrency):
        return f"Concurrency({lim.limit})"
    return f"RateLimit({lim.limit}, per_s={lim.per_s:g}, unit={lim.unit!r}, burst={lim.burst})"


def check_shared(declared: Iterable[tuple[str, Limit]]) -> None:
    """One name is one limit: every step (of any workflow of a deployment) that declares a named limit
    declares the same numbers; ``declared``: (workflow, limit) pairs. The numbers live in the code, not
    with the key's items, so two different ones would each enforce their own on one bucket."""
    seen: dict[str, tuple[str, str]] = {}
    for where, lim in declared:
        if lim.name is None:
            continue
        first = seen.setdefault(lim.name, (where, _numbers(lim)))
        if first[1] != _numbers(lim):
            raise ValidationError(
                f"limit {lim.name!r} is {first[1]} in workflow {first[0]!r} but {_numbers(lim)} in {where!r}: "
                "one name is one limit (give the other a name of its own)"
            )


__all__ = ["Concurrency", "KeyFn", "Limit", "RateLimit", "check_shared", "limits_of"]
