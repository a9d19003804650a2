"""What a running step is given besides its context's public surface: the worker's services
(:class:`StepServices`) and the meter of what it spends (:class:`CostMeter`). A leaf module: the
context (:mod:`stepchain.define.context`) and the step-local operations
(:mod:`stepchain.define.steplocal`) both use them, neither imports the other's module for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stepchain.clock import Clock
from stepchain.probe import Probe
from stepchain.store.base import CheckpointStore
from stepchain.store.payloads import PayloadCodec


class StepServices(Protocol):
    """What a running step needs from the worker (the engine's worker core provides it)."""

    store: CheckpointStore
    codec: PayloadCodec
    clock: Clock
    probe: Probe


@dataclass
class CostMeter:
    """What one invocation of a step spent (money, tokens) and reused (checkpoints, effect reruns)."""

    usd_nano: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    checkpoint_hits: int = 0  # ctx.each items and ctx.once results served from their checkpoints
    effect_reruns: int = 0  # ctx.once effects an earlier attempt started and never checkpointed


__all__ = ["CostMeter", "StepServices"]
