"""The embedded runtime's probes and fault injection: the audit of what executed
(:class:`AuditProbe`), the crash plan a worker process dies at (:class:`CrashPlanProbe`, written by
:class:`stepchain.testing.LocalHarness`) and duplicate delivery (:class:`DuplicatingSqsHandoff`).
They live with the runtime: the worker processes run them, the harness only writes their plan."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from stepchain.handoff.messages import Activation
from stepchain.handoff.sqs import SqsHandoff
from stepchain.probe import BOUNDARIES, CrashRule

#: the exit status of a worker a crash rule killed
CRASH_EXIT = 137


AUDITED = (
    "after_claim",  # a worker holds the node now (make demo kills a worker only inside an invocation)
    "mid_item",  # a ctx.each item is about to run
    "step_executed",
    "after_checkpoint",
    "item_executed",
    "item_checkpointed",
    "once_executed",
    "once_checkpointed",
)


class AuditProbe:
    """Appends what actually executed (steps, ctx.each items, ctx.once effects) and when each was
    checkpointed to a JSON-lines file: work re-executed after its checkpoint would be a bug."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        if boundary in AUDITED:
            line = json.dumps(
                {
                    "event": boundary,
                    "run_id": run_id,
                    "key": key,
                    "detail": detail,
                    "pid": os.getpid(),
                    "at": time.time(),
                }
            )
            with self._lock, open(self.path, "a") as f:
                f.write(line + "\n")


@contextmanager
def locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_rules(path: str) -> list[CrashRule]:
    try:
        return [CrashRule(**r) for r in json.loads(Path(path).read_text())]
    except FileNotFoundError:
        return []


def write_rules(path: str, rules: Sequence[CrashRule]) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in rules]))


class CrashPlanProbe(AuditProbe):
    """The worker-side probe of :class:`LocalHarness`: audits like :class:`AuditProbe`, and kills
    the process at a boundary a rule in the crash-plan file names. The plan is shared by every
    worker (rules count their matches across processes, under a file lock)."""

    def __init__(self, audit_path: str, plan_path: str) -> None:
        super().__init__(audit_path)
        self.plan_path = plan_path

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        super().reached(boundary, run_id, key, detail)
        if boundary not in BOUNDARIES:
            return
        with locked(self.plan_path):
            rules = read_rules(self.plan_path)
            fired = next((r for r in rules if r.matches(boundary, key)), None)
            if fired is not None:
                fired.fired += 1
            write_rules(self.plan_path, rules)  # skips counted down are kept too
        if fired is not None:
            line = {"event": "crashed", "run_id": run_id, "key": key, "detail": boundary, "pid": os.getpid()}
            with open(self.path, "a") as f:
                f.write(json.dumps({**line, "at": time.time()}) + "\n")
            os._exit(CRASH_EXIT)  # the process dies here, as under SIGKILL: no cleanup, no reply


class DuplicatingSqsHandoff(SqsHandoff):
    """The SQS handoff that, with ``duplicate``, sends every message the engine issues twice
    (``--duplicate-delivery``, ``duplicate_delivery=True`` of the SQS harnesses)."""

    duplicate = False

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        fresh = self._fresh(msgs, at_ms)
        if fresh:
            self._post(fresh, at_ms)
            if self.duplicate:  # every message the engine issues is delivered twice (forwarded hops are not)
                self._post(fresh, at_ms)


__all__ = [
    "AUDITED",
    "CRASH_EXIT",
    "AuditProbe",
    "CrashPlanProbe",
    "DuplicatingSqsHandoff",
    "locked",
    "read_rules",
    "write_rules",
]
