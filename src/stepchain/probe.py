"""The probe: an observer of named boundaries (the test harness injects crashes and counts
executions there; the AWS runtime counts them as metrics). Injected through constructors."""

from __future__ import annotations

from typing import Protocol


class Probe(Protocol):
    """Observer of named boundaries (the test harness injects crashes and counts executions here)."""

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None: ...


class NoProbe:
    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        return None


__all__ = ["NoProbe", "Probe"]
