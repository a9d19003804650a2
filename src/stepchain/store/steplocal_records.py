"""The records of step-local operations (``ctx.each`` iterations, ``ctx.once`` effects): what
their ``E#`` and ``O#`` items hold (key layout: :mod:`stepchain.store.records`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class EachRecord:
    """One checkpointed iteration of ``ctx.each``."""

    index: int
    value_ref: str
    duration_ms: int
    ended_ms: int
    #: the slowest item up to and including this one (ms): a resume reads only the last record
    slowest_ms: int = 0
    #: a short hash of the item (its JSON), when it is JSON-serializable: a changed list is detected
    fingerprint: str | None = None
    loop: str = ""
    generation: int = 0
    #: a completed loop's summary: ``value_ref`` holds every result, ``index`` the last item's,
    #: ``fingerprint`` the whole item list's (written when the step continues after the loop)
    complete: bool = False

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "index": self.index,
            "value": self.value_ref,
            "duration_ms": self.duration_ms,
            "ended": self.ended_ms,
            "slowest_ms": self.slowest_ms,
        }
        if self.fingerprint is not None:
            item["fp"] = self.fingerprint
        if self.complete:
            item["complete"] = True
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any], loop: str = "", generation: int = 0) -> EachRecord:
        fp = item.get("fp")
        return cls(
            int(item["index"]),
            str(item["value"]),
            int(item["duration_ms"]),
            int(item["ended"]),
            int(item.get("slowest_ms", item["duration_ms"])),
            None if fp is None else str(fp),
            loop,
            generation,
            bool(item.get("complete", False)),
        )


class OnceState(StrEnum):
    STARTED = "STARTED"  # the effect was started (in-progress marker) and its result not checkpointed yet
    DONE = "DONE"  # the effect's result is checkpointed


@dataclass(frozen=True)
class OnceStart:
    """What the in-progress marker write of ``ctx.once`` found.

    ``done_ref``: the checkpointed result (the effect is over: return it). Otherwise the marker is
    ours; ``restarted`` says an earlier attempt had started the effect and never checkpointed it.
    """

    done_ref: str | None = None
    restarted: bool = False
    previous_owner: str | None = None
