"""What a step declaration may set beside its function: the retry policy, and the Lambda function
settings ``stepchain template`` deploys it with (:func:`deploy_settings`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stepchain.exceptions import ValidationError


@dataclass(frozen=True)
class RetryPolicy:
    """How often a step is attempted and how long to wait in between.

    ``max_attempts`` counts every attempt, the first included; crashes and timeouts count too.
    """

    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_rate: float = 2.0
    max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValidationError("RetryPolicy.max_attempts must be >= 1")
        if self.backoff_s < 0 or self.backoff_rate < 1:
            raise ValidationError("RetryPolicy needs backoff_s >= 0 and backoff_rate >= 1")

    def delay_s(self, failed_attempt: int) -> float:
        """Delay before the attempt that follows failed attempt number ``failed_attempt`` (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * self.backoff_rate ** max(0, failed_attempt - 1))


def deploy_settings(
    memory_mb: int, reserved_concurrency: int | None, environment: Mapping[str, Any] | None, policies: Iterable[Any]
) -> dict[str, Any]:
    """Checked function settings of a step, as :class:`Node` fields.

    ``memory_mb`` (128..10240), ``reserved_concurrency`` (>= 0: the default of the function's
    ``<Name>ReservedConcurrency`` parameter; 0 or None = unreserved), ``environment`` (extra environment
    values) and ``policies`` (extra SAM ``Policies`` items, intrinsics in long form: ``{"Ref": ...}``).
    """
    if not isinstance(memory_mb, int) or not 128 <= memory_mb <= 10240:
        raise ValidationError("memory_mb must be a whole number of MB in 128..10240 (the Lambda limits)")
    if reserved_concurrency is not None and (not isinstance(reserved_concurrency, int) or reserved_concurrency < 0):
        raise ValidationError("reserved_concurrency must be a whole number >= 0")
    env = dict(environment or {})
    bad = [k for k in env if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", str(k))]
    if bad:
        raise ValidationError(f"environment variable names must match [A-Za-z][A-Za-z0-9_]*: {bad}")
    return {
        "memory_mb": memory_mb,
        "reserved_concurrency": reserved_concurrency or None,
        "environment": tuple(sorted(env.items())),
        "policies": tuple(policies),
    }


#: ``Workflow(fuse=True)``: the most steps one invocation runs (stepchain.engine.fusion)
DEFAULT_FUSE_MAX_STEPS = 50


def fuse_max_steps(fuse: bool | int) -> int:
    """``Workflow(fuse=...)`` as the most steps one invocation of its functions runs: ``False`` 1 (no
    fusion, the default), ``True`` :data:`DEFAULT_FUSE_MAX_STEPS`, a whole number >= 2 that cap."""
    if isinstance(fuse, bool):
        return DEFAULT_FUSE_MAX_STEPS if fuse else 1
    if not isinstance(fuse, int) or fuse < 2:
        raise ValidationError(f"fuse must be True, False or a whole number >= 2 (steps per invocation), got {fuse!r}")
    return fuse
