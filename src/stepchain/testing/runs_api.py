"""The part of the harness interface that talks to the engine and the store, shared by every
harness (:class:`~stepchain.testing.Harness`, ``SqsHarness``, ``SfnHarness``, ``LocalHarness``)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from stepchain.define.workflow import Registry
from stepchain.engine import Engine
from stepchain.engine.events import waiting_for
from stepchain.observe.ledger import RunView
from stepchain.store.base import CheckpointStore
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import RunStatus
from stepchain.store.stream import read_events


class RunsApi:
    """Start, signal, cancel, redrive and look at runs (what the HTTP API does), through ``engine``."""

    engine: Engine
    store: CheckpointStore
    codec: PayloadCodec
    registry: Registry
    run_ids: list[str]  # runs started through :meth:`start`, in order

    def start(
        self,
        workflow: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        owner: str | None = None,
        budget_usd: float | None = None,
    ) -> str:
        """Start a run (what ``POST /runs`` does, as caller ``owner``); returns its id."""
        run, _ = self.engine.runs.start(
            workflow, input, idempotency_key=idempotency_key, owner=owner, budget_usd=budget_usd
        )
        if run.run_id not in self.run_ids:
            self.run_ids.append(run.run_id)
        return run.run_id

    def raise_budget(self, run_id: str, budget_usd: float) -> None:
        """Set a budgeted run's budget (what ``POST /runs/{id}/budget`` does); a paused run resumes."""
        with getattr(self, "_lock", nullcontext()):  # SfnHarness: the API side takes the invocation lock
            self.engine.runs.raise_budget(run_id, budget_usd)

    def approve_budget(self, run_id: str) -> None:
        """Approve the step the run's budget holds (what ``POST /runs/{id}/events/budget`` does)."""
        with getattr(self, "_lock", nullcontext()):
            self.engine.runs.approve_budget(run_id)

    def send_event(self, run_id: str, name: str, payload: Any = None, *, iteration: int | None = None) -> str:
        """Deliver event ``name`` (for the wait of loop iteration ``iteration``; see ``POST
        /runs/{id}/events/{name}?iteration=``): ``"delivered"`` (a wait consumed it) or ``"buffered"``
        (kept for the wait to come). Raises :class:`~stepchain.exceptions.EventIterationError` where the
        API answers 409 ``event_iteration_*``."""
        return self.engine.runs.deliver_event(run_id, name, payload, iteration=iteration)

    def waiting_for(self, run_id: str) -> dict[str, Any] | None:
        """``{"event": name, "iteration": n}`` while the run waits for an event (the API's run
        detail ``waiting_for``), else None."""
        run = self.engine.get_run(run_id)
        return waiting_for(self.engine.registry.find(run.workflow, run.version), run)

    def cancel(self, run_id: str) -> None:
        """Cancel an active run: nodes not started never will; a node running now finishes."""
        self.engine.runs.cancel(run_id)

    def redrive(
        self, run_id: str, *, input: Any = None, replace_input: bool = False, keep_progress: bool | None = None
    ) -> None:
        """Resume a FAILED run at its failed node(s) (with ``replace_input``, on ``input``)."""
        extra: dict[str, Any] = {} if keep_progress is None else {"keep_progress": keep_progress}
        self.engine.runs.redrive(run_id, input=input, replace_input=replace_input, **extra)

    def fork(
        self,
        run_id: str,
        node: str,
        *,
        iteration: int = 0,
        input: Any = None,
        replace_input: bool = False,
        state: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Fork the run at ``node`` in loop ``iteration`` (what ``POST /runs/{id}/fork`` does): a new
        run starting there with the checkpoints before it copied by reference, ``input`` (with
        ``replace_input``) and ``state`` (fields to set) edited; returns the new run's id."""
        with getattr(self, "_lock", nullcontext()):  # SfnHarness: the API side takes the invocation lock
            run, _ = self.engine.runs.fork(
                run_id,
                node,
                iteration=iteration,
                input=input,
                replace_input=replace_input,
                state=state,
                idempotency_key=idempotency_key,
                owner=owner,
            )
        if run.run_id not in self.run_ids:
            self.run_ids.append(run.run_id)
        return run.run_id

    def _status_after_run(self, run_id: str | None) -> str:
        if run_id is None:
            run_id = self.run_ids[-1] if self.run_ids else max(self.runs(), default=None)
        return "" if run_id is None else self.status(run_id)

    # -- looking at runs (the same on every harness) -------------------------------------------------
    def status(self, run_id: str) -> str:
        """The run's status: RUNNING, WAITING, SUCCEEDED, FAILED or CANCELLED."""
        return self.engine.runs.get_run(run_id).status.value

    def output(self, run_id: str) -> Any:
        """The output of a SUCCEEDED run (AssertionError with the run's error otherwise)."""
        run = self.engine.runs.get_run(run_id)
        if run.status is not RunStatus.SUCCEEDED:
            raise AssertionError(f"run {run_id} is {run.status.value}: {run.error}")
        return self.codec.decode(run.output_ref)

    def view(self, run_id: str) -> RunView:
        """The run's ledger: nodes, items, attempts, crashes, costs (what ``GET /runs/{id}`` shows)."""
        return self.engine.runs.describe(run_id)

    def stream(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The run's progress-stream events after sequence ``after`` (``GET /runs/{id}/stream``): dicts
        with ``seq``, ``id``, ``kind``, ``data``, ``node`` and ``at``, oldest first."""
        return [e.to_dict() for e in read_events(self.store, run_id, after=after, limit=limit)]

    def runs(self) -> list[str]:
        """Ids of every run the store holds (of the registered workflows), oldest first; also the
        runs started through the API handler, or by a ``start`` that crashed."""
        found: set[str] = set()
        for name in self.registry.names():
            cursor: str | None = None
            while True:
                page = self.store.list_runs(name, limit=100, cursor=cursor)
                found.update(r.run_id for r in page.runs)
                cursor = page.cursor
                if cursor is None:
                    break
        return sorted(found)
