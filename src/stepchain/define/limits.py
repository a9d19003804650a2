"""Per-run limits of a deployment: how wide one map may fan out and how large a run input may be.

template.yaml sets them from its ``MaxMapItems`` / ``MaxInputBytes`` parameters on every function:

==============================  ========================================================================
``STEPCHAIN_MAX_MAP_ITEMS``     the most items one map step may fan out to; a wider map fails the run with
                                a ``LimitExceeded`` error (before any item is written or dispatched)
``STEPCHAIN_MAX_INPUT_BYTES``   the largest run input (compact JSON) ``POST /runs`` and a redrive with a
                                new input accept; larger is a 413 ``limit_exceeded``
``STEPCHAIN_CALLER_DAILY_``     the dollars one caller's budgeted runs may reserve per UTC day (each run
``BUDGET_USD``                  reserves its budget at its start; stepchain.engine.budget); over it a start
                                is refused (``BudgetExceeded``, 429 ``budget_exceeded``)
==============================  ========================================================================

Unset (the library's default, e.g. in tests and local runs) means no limit beyond the API's 256 KiB body.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from stepchain.exceptions import LimitExceeded
from stepchain.settings import env_int

__all__ = ["RunLimits"]


@dataclass(frozen=True)
class RunLimits:
    max_map_items: int | None = None
    max_input_bytes: int | None = None
    caller_daily_budget_usd: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunLimits:
        env = os.environ if env is None else env

        daily = env.get("STEPCHAIN_CALLER_DAILY_BUDGET_USD")
        return cls(
            env_int("STEPCHAIN_MAX_MAP_ITEMS", env=env),
            env_int("STEPCHAIN_MAX_INPUT_BYTES", env=env),
            float(daily) if daily else None,
        )

    def check_input_bytes(self, size: int) -> None:
        if self.max_input_bytes is not None and size > self.max_input_bytes:
            raise LimitExceeded(
                f"run input is {size} bytes; this deployment accepts at most {self.max_input_bytes} "
                "(STEPCHAIN_MAX_INPUT_BYTES): pass a reference to large data instead"
            )

    def map_error(self, node: str, items: int) -> dict[str, str] | None:
        """The run's error when a map of ``items`` items is too wide, else None."""
        if self.max_map_items is None or items <= self.max_map_items:
            return None
        return {
            "node": node,
            "type": LimitExceeded.__name__,
            "message": f"map {node!r} has {items} items; this deployment allows at most {self.max_map_items} "
            "(STEPCHAIN_MAX_MAP_ITEMS)",
        }
