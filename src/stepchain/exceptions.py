"""Every error stepchain raises, in one place.

Two families:

* ``StepchainError`` (an ``Exception``): things a caller can handle. ``TerminalError`` and
  ``RetryableError`` are what a *step* raises to steer the engine; the rest describe misuse of the
  library or of a run (unknown run, wrong state, idempotency conflict, bad payload).
* ``StepchainSignal`` (a ``BaseException``): control flow the engine uses inside a step, such as
  "continue in a fresh invocation". Deriving from ``BaseException`` means a user's broad
  ``except Exception`` cannot swallow it.
"""

from __future__ import annotations


class StepchainError(Exception):
    """Base class of every error stepchain raises on purpose."""

    code = "stepchain_error"
    http_status = 500


# --- raised by user steps ---------------------------------------------------------------------


class TerminalError(StepchainError):
    """A step failure that must not be retried: the run fails with this error."""

    code = "terminal_error"


class RetryableError(StepchainError):
    """A step failure worth retrying. Any other ``Exception`` is treated the same way, except for
    ``retry_after_s``: the next attempt comes that many seconds later (e.g. what a rate-limited API
    said in its ``Retry-After``) instead of after the ``RetryPolicy``'s backoff. The policy's
    ``max_attempts`` still bounds the attempts; the delay is recorded on the node's error
    (``retry_after_s``) and its run's ledger."""

    code = "retryable_error"

    def __init__(self, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int | float):
                raise TypeError("retry_after_s must be a number of seconds")
            if not 0 <= retry_after_s <= MAX_RETRY_AFTER_S:
                raise ValueError(f"retry_after_s must be within 0..{MAX_RETRY_AFTER_S} seconds")
        self.retry_after_s = None if retry_after_s is None else float(retry_after_s)


#: the longest ``RetryableError.retry_after_s`` (one day; a longer pause is a ``wf.sleep`` or an event wait)
MAX_RETRY_AFTER_S = 86_400


class StepTimedOut(StepchainError):
    """An ``async def`` step outlived its invocation's time budget and was cancelled (see
    :mod:`stepchain.define.aio`); retried per the step's ``RetryPolicy``."""

    code = "step_timed_out"


# --- misuse of the library or of a run ------------------------------------------------------


class ValidationError(StepchainError):
    """Input that stepchain cannot accept (bad workflow definition, bad argument, bad payload)."""

    code = "validation_error"
    http_status = 400


class PayloadError(ValidationError):
    """A step input or output that cannot be serialized to JSON."""

    code = "payload_error"


class WorkflowNotFound(StepchainError):
    code = "workflow_not_found"
    http_status = 404


class RunNotFound(StepchainError):
    code = "run_not_found"
    http_status = 404


class StepNotFound(StepchainError):
    code = "step_not_found"
    http_status = 404


class EventNotFound(StepchainError):
    """The workflow does not wait for an event of that name."""

    code = "event_not_found"
    http_status = 404


class BlobUnavailable(StepchainError):
    """A stored value is missing or does not match its checksum: a fault of the store, not the caller."""

    code = "blob_unavailable"
    http_status = 500


class BudgetNotDeclared(ValidationError):
    """A run was given a dollar budget, but its workflow declares none (``Workflow(budget_usd=...)``):
    only a budgeted workflow's steps check a budget. 409: the request is well formed; the workflow it
    names does not take it."""

    code = "budget_not_declared"
    http_status = 409


class StateNotDeclared(ValidationError):
    """A fork was given a state edit, but its workflow declares no state (``Workflow(state=...)``), or
    the node it starts at has no state to edit (the first node starts from the model's defaults).
    409: the request is well formed; the run it names does not take it."""

    code = "state_not_declared"
    http_status = 409


class InvalidRunState(StepchainError):
    """The run (or node) is not in a state that allows the requested operation."""

    code = "invalid_run_state"
    http_status = 409


class EventIterationError(InvalidRunState):
    """An event delivery whose loop iteration is missing or wrong (``stepchain.engine.events``): ``code``
    is ``event_iteration_required`` (a wait inside a loop, no iteration named, and the run is past its
    first iteration's wait), ``event_iteration_passed`` (the named iteration's wait is over without
    this event) or ``event_iteration_unknown`` (the wait never has that iteration). ``iteration`` is
    the one the run waits in, or will wait in next (None when unknown)."""

    def __init__(self, code: str, message: str, event: str, iteration: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.event = event
        self.iteration = iteration
        self.details = [{"event": event, "iteration": iteration}]


class IdempotencyConflict(StepchainError):
    """The same idempotency key was used with a different request body."""

    code = "idempotency_conflict"
    http_status = 409


class StoreConflict(StepchainError):
    """A store transaction's condition failed where none was expected (a run id used twice)."""

    code = "store_conflict"
    http_status = 409


class VersionMismatch(StepchainError):
    """A message for a run pinned to a workflow version this worker does not have."""

    code = "version_mismatch"
    http_status = 409


# --- control-flow signals (not errors) ------------------------------------------------------


class StepchainSignal(BaseException):
    """Base of control-flow signals; ``except Exception`` does not catch these."""


class ContinueInNewInvocation(StepchainSignal):
    """Raised inside a step when its remaining time budget is too small for the next unit of work.

    The engine records progress, releases the step as CONTINUING and hands off a continuation.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- step-local operations (ctx.each / ctx.once) -------------------------------------------


class OperationNameReused(TerminalError):
    """An explicit ``ctx.each``/``ctx.once`` name used twice in the same scope of one invocation.

    Two operations sharing an id would share their checkpoints (the second would silently get the
    first one's results), so this fails the step instead.
    """

    code = "operation_name_reused"


class StateModelMismatch(TerminalError):
    """A run's stored durable state does not fit the state model the step reads it with: the model
    changed under a fixed ``Workflow(version=...)`` (a model change otherwise makes a new version, and
    the run stays on its own). Terminal: the run fails with this error, naming the model and field."""

    code = "state_model_mismatch"


class EachItemsChanged(TerminalError):
    """``ctx.each`` resumed with items that differ from the ones its checkpoints were made for."""

    code = "each_items_changed"


class StepCancelled(StepchainSignal):
    """Raised inside a running step (at a ``ctx.each`` item checkpoint) when its run was cancelled."""


class VersionNotRegistered(VersionMismatch):
    """A run is pinned to a workflow version this deployment does not register (any more).

    Its records stay readable and it can be cancelled; anything that would advance it (a worker
    activation, an event, a redrive) fails the run with this error, naming the version. Register
    that version again (keep the old ``Workflow(..., version=...)`` in the deployment) and redrive.
    """

    code = "version_not_registered"
    http_status = 409


class LimitExceeded(TerminalError):
    """A per-run limit of the deployment (``stepchain.define.limits.RunLimits``) was exceeded: a run input over
    ``STEPCHAIN_MAX_INPUT_BYTES`` (the API answers 413 ``limit_exceeded``), or a map wider than
    ``STEPCHAIN_MAX_MAP_ITEMS`` (the run fails with this error type; it is not retried)."""

    code = "limit_exceeded"
    http_status = 413


class BudgetExceeded(LimitExceeded):
    """A caller's daily dollar budget has no room for another run (``POST /runs``: 429
    ``budget_exceeded``; ``STEPCHAIN_CALLER_DAILY_BUDGET_USD``), or a step would take its run over
    its budget (the run's error type with ``Workflow(on_budget="fail")``)."""

    code = "budget_exceeded"
    http_status = 429


class ScaffoldError(StepchainError):
    """``stepchain new`` refused (a non-empty target directory, an unusable name, no wheel); nothing was
    overwritten. The command exits 2 with the message."""

    code = "scaffold_error"


class DeployError(StepchainError):
    """``stepchain deploy-local``: the stack did not reach CREATE_COMPLETE / UPDATE_COMPLETE (the message
    says why: the failed resources' events)."""

    code = "deploy_error"


class IterationLimitExceeded(TerminalError):
    """A route would start loop iteration ``max_iterations`` of a run (``Workflow(max_iterations=...)``):
    the run fails with this error instead of looping on. Iterations are numbered from 0."""

    code = "iteration_limit_exceeded"


class UnknownRoute(TerminalError):
    """A step returned ``goto(to, ...)`` with ``to`` not among its declared ``routes``."""

    code = "unknown_route"
