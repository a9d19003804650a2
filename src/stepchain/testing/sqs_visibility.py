"""Per-message visibility in virtual time, for :class:`stepchain.testing.sqs_driver.SqsHarness`.

The harness's queues have a real visibility timeout of 12 h and the driver decides when a message
that was not deleted comes back. The SQS heartbeat (:mod:`stepchain.engine.heartbeat`) changes a message's
visibility with ``ChangeMessageVisibility(Batch)``: a botocore hook on the framework's client notes
the virtual moment each receipt handle becomes visible again (now + its ``VisibilityTimeout``) and
sends the real queue 12 h instead, so the driver makes it visible at that virtual moment.
"""

from __future__ import annotations

from typing import Any

from stepchain.testing.clock import VirtualClock


class VisibilityModel:
    """Where the framework set a message's visibility, in virtual time (by receipt handle)."""

    def __init__(self, clock: VirtualClock, real_visibility_s: int) -> None:
        self.clock = clock
        self.real_visibility_s = real_visibility_s
        self.visible_at: dict[str, int] = {}
        #: (virtual ms, receipt handle, VisibilityTimeout) of every change, in order
        self.changes: list[tuple[int, str, int]] = []

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.sqs.ChangeMessageVisibility", self._on_change)
        client.meta.events.register("before-parameter-build.sqs.ChangeMessageVisibilityBatch", self._on_batch)

    def _note(self, entry: dict[str, Any]) -> None:
        seconds = int(entry["VisibilityTimeout"])
        now = self.clock.now_ms()
        self.changes.append((now, entry["ReceiptHandle"], seconds))
        self.visible_at[entry["ReceiptHandle"]] = now + seconds * 1000
        entry["VisibilityTimeout"] = self.real_visibility_s if seconds else 0

    def _on_change(self, params: dict[str, Any], **_: Any) -> None:
        self._note(params)

    def _on_batch(self, params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            self._note(entry)

    def visible_again(self, receipt: str, default_ms: int) -> int:
        """When a message that was not deleted comes back: where the framework last set it, else
        ``default_ms`` (the queue's own visibility timeout)."""
        return self.visible_at.pop(receipt, default_ms)


__all__ = ["VisibilityModel"]
