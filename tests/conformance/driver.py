"""Run one conformance case on one transport and compare it with the pure model (cells.expect).

A case is (kind, position, transport, boundary, duplicate). The driver starts the cell's root run,
crashes the worker (or the API call) once at ``boundary`` of node ``x`` where the position puts it,
delivers every message twice when ``duplicate``, answers every event wait, lets sleeps pass (the
harnesses skip virtual time) and, when the run stops short, lets time pass and runs the recovery
sweeper, as a deployment's schedule would. It returns the differences from the model (empty: the
case conforms).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from tests.conformance.cells import EVENT, INPUT, ROOT, WORLD, build, crash_key, expect

from stepchain.testing import Harness, InjectedCrash, SfnHarness, SqsHarness

#: the transports: the in-memory harness, the real DynamoDB/S3 adapters on moto, SQS, Step Functions
TRANSPORTS = ("memory", "moto", "sqs", "sfn")
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
SETTLE_ROUNDS = 6
SWEEP_STEP_S = 600
SFN_POLL_S = 8.0  # real seconds SfnHarness.run polls without progress before the case is declared stuck


@contextmanager
def harness(transport: str, workflows: list[Any], duplicate: bool) -> Iterator[Any]:
    if transport == "memory":
        h: Any = Harness(*workflows, duplicate_delivery=duplicate)
    elif transport == "moto":
        h = Harness(*workflows, backend="moto", duplicate_delivery=duplicate)
    elif transport == "sqs":
        h = SqsHarness(*workflows, backend="memory", duplicate_delivery=duplicate)
    elif transport == "sfn":
        h = SfnHarness(*workflows, backend="memory", duplicate_delivery=duplicate, poll_timeout_s=SFN_POLL_S)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    with h:
        yield h


@dataclass(frozen=True)
class Case:
    kind: str
    position: str
    transport: str
    boundary: str
    duplicate: bool

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.position}-{self.transport}-{self.boundary}-{'dup' if self.duplicate else 'once'}"


@dataclass
class Drive:
    case: Case
    h: Any
    run_id: str = ""
    notes: list[str] = field(default_factory=list)
    swept: int = 0  # what the sweeper re-issued or failed
    stalls: int = 0  # run() returned with the run RUNNING and no event to answer

    def start(self) -> None:
        try:
            self.run_id = self.h.start(ROOT, list(INPUT))
        except InjectedCrash:  # the client never got the run id: find it as an operator would
            self.notes.append("start crashed")
            (self.run_id,) = [r.run_id for r in self.h.store.list_runs(ROOT, limit=10).runs]
            if self.run_id not in self.h.run_ids:
                self.h.run_ids.append(self.run_id)

    def drain(self) -> None:
        try:
            if self.case.transport == "sfn":
                self.h.run(self.run_id, timeout_s=SFN_POLL_S)
            else:
                self.h.run(self.run_id)
        except (
            TimeoutError,
            ClientError,
        ) as exc:  # stuck, or no execution yet (a start that died: the sweeper starts it)
            self.notes.append(f"drain: {type(exc).__name__}: {str(exc)[:160]}")

    def answer_waits(self) -> bool:
        sent = False
        for rid in self.h.runs():
            w = self.h.waiting_for(rid)
            if w is None or w["event"] != EVENT:
                continue
            try:
                self.h.send_event(rid, EVENT, [50 + w["iteration"]], iteration=w["iteration"])
            except InjectedCrash:  # not retried by the client: the sweeper finishes the delivery
                self.notes.append("send_event crashed")
            sent = True
        return sent

    def settle(self) -> str:
        status, quiet = "", False
        for _ in range(SETTLE_ROUNDS):
            self.drain()
            status = self.h.status(self.run_id)
            if status not in FINISHED and self.answer_waits():  # also a child's wait (its parent RUNNING)
                quiet = False
                continue
            if status == "RUNNING":
                self.stalls += 1
            if status in FINISHED:
                if quiet:
                    return status
                quiet = True  # the schedule runs the sweeper once more: it may finish a half-done call
            else:
                quiet = False
            self.h.advance(SWEEP_STEP_S)
            self.swept += int(self.h.sweep() or 0)
        self.notes.append(f"gave up settling at {status}")
        return status


def run_case(case: Case, fuse: bool | int = False) -> list[str]:
    """Run the case (its workflows defined with ``fuse``); the differences from the model (empty when it conforms)."""
    WORLD.reset()
    model = expect(case.kind, case.position, case.boundary)
    with harness(case.transport, build(case.kind, case.position, fuse), case.duplicate) as h:
        if case.boundary != "none":
            h.crash_at(case.boundary, node=crash_key(case.position))
        d = Drive(case, h)
        d.start()
        status = d.settle()
        problems: list[str] = []
        if status != "SUCCEEDED":
            problems.append(f"root run {status}: {h.engine.get_run(d.run_id).error}; notes {d.notes}")
        else:
            out = h.output(d.run_id)
            if out != model.output:
                problems.append(f"output {out} != model {model.output}")
        target = crash_key(case.position)
        if case.boundary != "none" and not any(
            b == case.boundary and (k == target or k.startswith((target + "#", target + "~")))
            for b, k in h.probe.crashes
        ):
            problems.append(f"the crash at {case.boundary} of {target} never happened (crashes: {h.probe.crashes})")
        if d.stalls and not needs_sweeper(case):
            problems.append(f"run() returned {d.stalls}x with the run RUNNING and nothing to wait for")
        if d.swept and not needs_sweeper(case):
            problems.append(f"the sweeper had to act ({d.swept}): a worker crash is recovered by redelivery alone")
        runs = h.runs()
        statuses = {r: h.status(r) for r in runs}
        if len(runs) != model.runs or set(statuses.values()) != {"SUCCEEDED"}:
            problems.append(f"runs {statuses} (model: {model.runs} runs, all SUCCEEDED)")
        if Counter(WORLD.ran) != model.ran:
            problems.append(f"step executions {_diff(WORLD.ran, model.ran)}")
        problems += stream_problems(h, runs, model.ran)
        if Counter(WORLD.effects) != model.effects:
            problems.append(f"effects {_diff(WORLD.effects, model.effects)}")
        reruns = sum(n.effect_reruns for r in runs for n in h.view(r).nodes)
        if reruns != model.effect_reruns:
            problems.append(f"effect_reruns {reruns} != model {model.effect_reruns}")
        return problems


def stream_problems(h: Any, runs: list[str], ran: Counter[tuple[str, str]]) -> list[str]:
    """The stream column: every run's stream gap-free with one event per id, and one ``ran`` event per
    step execution the model counts (a re-run's copy dropped, none lost)."""
    problems: list[str] = []
    seen: Counter[tuple[str, str]] = Counter()
    for r in runs:
        events = h.stream(r, limit=10_000)
        if [e["seq"] for e in events] != list(range(1, len(events) + 1)) or len({e["id"] for e in events}) != len(
            events
        ):
            problems.append(f"stream of {r}: seqs {[e['seq'] for e in events]}, ids not unique or gaps")
        workflow = h.engine.get_run(r).workflow
        seen.update((workflow, e["node"]) for e in events if e["kind"] == "ran")
    if seen != ran:
        problems.append(f"stream 'ran' events {_diff(seen, ran)}")
    return problems


def needs_sweeper(case: Case) -> bool:
    """Only an API call that died (no client retry) or a start that died before its first handoff
    (``before_handoff`` of the first node happens inside ``start``) needs the sweeper; a worker that
    dies anywhere else is redelivered (a queue's visibility timeout, Step Functions' task Retry)."""
    return case.boundary.startswith("api_") or (case.boundary == "before_handoff" and case.position == "first")


def _diff(got: Counter[Any], want: Counter[Any]) -> dict[str, tuple[int, int]]:
    return {"/".join(k): (got[k], want[k]) for k in sorted(set(got) | set(want)) if got[k] != want[k]}
