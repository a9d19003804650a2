"""Request and response bodies of the runs API (pydantic v2; they also make the OpenAPI document).

The run views mirror :class:`stepchain.observe.ledger.RunView` field for field; a test checks they stay in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from stepchain.api.security import redact, redact_error
from stepchain.store.records import NodeStatus, RunStatus

#: run ids are 24 lowercase hex chars (12 of milliseconds, 12 random): see ``stepchain.engine.new_run_id``
RUN_ID_PATTERN = r"^[0-9a-f]{24}$"
STEP_PATTERN = r"^[a-z][a-z0-9_]{0,47}(~[0-9]{5})?$"  # a step, or its loop iteration: think~00003
EVENT_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
WORKFLOW_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

#: a step's or run's error as the API shows it: every value redacted (``stepchain.api.security.redact``);
#: the store and the logs keep the full text. Every error field of every response model has this type.
StepError = Annotated[dict[str, str] | None, AfterValidator(redact_error)]
#: the message of an error response, redacted the same way
ErrorMessage = Annotated[str, AfterValidator(redact)]


def _whole_number(value: Any) -> Any:
    """A JSON integer (``2`` or ``2.0``, as JSON Schema's ``integer``); not a boolean, a string or ``2.5``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise ValueError("must be a whole number")
    return int(value)


#: an integer field of a request body, as JSON Schema reads ``integer``
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


class _Closed(BaseModel):
    """A request body: unknown fields are an error (a typo such as ``inputs`` must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------------- requests
class StartRunRequest(_Closed):
    workflow: str = Field(pattern=WORKFLOW_PATTERN, description="Name of a registered workflow.")
    input: Any = Field(default=None, description="The first step's input: any JSON value.")
    budget_usd: float | None = Field(
        default=None,
        ge=0,
        lt=1e9,
        allow_inf_nan=False,
        description="This run's dollar budget, instead of its workflow's budget_usd (a workflow without "
        "one: 400). A retried start with the same Idempotency-Key returns the run with its first budget.",
    )


class BudgetRequest(_Closed):
    budget_usd: float = Field(
        ge=0, lt=1e9, allow_inf_nan=False, description="The run's new dollar budget (LLM + compute of its steps)."
    )


class RedriveRequest(_Closed):
    input: Any = Field(
        default=None, description="When present, the failed step starts over with this input instead of its own."
    )
    keep_progress: StrictBool | None = Field(
        default=None,
        description="Keep the failed step's partial progress (ctx.each items, ctx.once results). "
        "Default: kept, unless a new input is given.",
    )


class ForkRequest(_Closed):
    node: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="The step to start the fork at (a node of this run's workflow; not a map item, not a node of a "
        "child run: fork that run).",
    )
    iteration: WholeNumber = Field(default=0, ge=0, le=99_999, description="Its loop iteration (0 outside loops).")
    input: Any = Field(
        default=None, description="When present, the step starts with this input instead of the one it had."
    )
    state: dict[str, Any] | None = Field(
        default=None,
        description="Fields of the run's durable state to set before the step (validated against the state "
        "model: 400 on a bad value or an unknown field); the rest is the state the step started from.",
    )


# ---------------------------------------------------------------------------------- responses
class ForkOrigin(BaseModel):
    """Where a fork came from."""

    run_id: str
    node: str
    iteration: int


class Links(BaseModel):
    self: str
    steps: str = Field(description="Template: replace {step} with a step id.")
    events: str = Field(description="Template: replace {name} with an event name.")
    cancel: str
    redrive: str
    fork: str


class RunHandle(BaseModel):
    """What starting, cancelling or redriving a run returns."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    links: Links


class RunSummary(RunHandle):
    created_ms: int
    updated_ms: int
    ended_ms: int | None = None
    current: str | None = None
    error: StepError = None


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null at the end.")


class InvocationView(BaseModel):
    """One bar of a node's timeline: an invocation that worked on it."""

    started_ms: int
    ended_ms: int | None
    outcome: str


class NodeViewModel(BaseModel):
    key: str
    node: str
    kind: str
    status: NodeStatus
    index: int | None
    attempts: int
    invocations: int
    crashes: int
    checkpoint_hits: int
    resumed: bool
    duration_ms: int
    started_ms: int | None
    ended_ms: int | None
    cost_usd: float
    compute_usd: float
    input_tokens: int
    output_tokens: int
    output_bytes: int
    offloaded: bool
    items_checkpointed: int
    error: StepError
    history: list[InvocationView]
    effect_reruns: int = Field(
        default=0, description="ctx.once effects run again: an earlier attempt started them and never checkpointed"
    )
    requests: dict[str, int] = Field(
        default_factory=dict, description="AWS requests made for this node, by counter (ddb_write, sqs_send ...)"
    )
    orchestration_usd: float = Field(default=0.0, description="Their price (DynamoDB, S3, SQS, Step Functions).")
    throttled: dict[str, Any] | None = Field(
        default=None,
        description="A step held by a concurrency or rate limit: its limit, key and until_ms (expected start, epoch "
        "ms). The node is RETRYING meanwhile, with no Lambda running and no attempt counted.",
    )
    items: list[NodeViewModel] = Field(default_factory=list)
    iteration: int = Field(default=0, description="The loop iteration: each iteration of a node is its own row")
    route: str | None = Field(default=None, description="The successor a routing step chose (__end__: the end)")
    copied_from: str | None = Field(
        default=None, description="A fork's copy of this checkpoint of that run (by reference: not run here)."
    )
    fused: bool = Field(default=False, description="It ran inline after its predecessor (step fusion): no handoff")


class RunTotals(BaseModel):
    nodes: int
    succeeded: int
    invocations: int
    attempts: int
    crashes: int
    resumed_nodes: int
    checkpoint_hits: int
    compute_ms: int
    cost_usd: float
    compute_usd: float
    input_tokens: int
    output_tokens: int
    wall_ms: int
    iterations: int = Field(default=1, description="Loop iterations the run reached (1 without loops)")
    requests: dict[str, int] = Field(default_factory=dict, description="AWS requests of the run, by counter.")
    orchestration_by_service: dict[str, float] = Field(
        default_factory=dict, description="What durability cost, USD by service (Lambda's requests: compute_usd)."
    )
    orchestration_usd: float = 0.0
    prices: str = Field(default="", description="The price table used: region and version.")
    budget_usd: float | None = Field(default=None, description="A budgeted run's dollar budget (else absent).")
    budget_spent_usd: float | None = Field(
        default=None, description="What the budgeted run's steps spent so far, LLM + compute (checked per step)."
    )


class RestartTaxView(BaseModel):
    """What a naive retry-from-scratch would have paid again at the run's crashes."""

    crashes: int
    seconds: float
    usd: float


class FusionSavedView(BaseModel):
    """What step fusion saved the run: per fused step a handoff, a claim write and an invocation."""

    fused_steps: int = 0
    requests: dict[str, int] = Field(default_factory=dict, description="AWS requests not made, by counter")
    usd: float = Field(default=0.0, description="Their price")
    handoff_s: float = Field(
        default=0.0, description="Handoff time saved: the run's own mean handoff gap x fused steps"
    )


class CrashEventView(BaseModel):
    at_ms: int
    node: str
    kind: str


class OutputFields(BaseModel):
    """A value either inline (``output``) or, when offloaded to S3, behind a presigned URL (``output_url``)."""

    has_output: bool = Field(default=False, description="False until the run (or step) has succeeded.")
    output: Any = Field(default=None, description="The value itself, when it is small enough to be inline.")
    output_url: str | None = Field(default=None, description="Presigned GET URL of an offloaded value.")
    output_bytes: int = 0
    output_omitted: str | None = Field(
        default=None, description="Why a stored value is not inline (e.g. nested too deeply to serve as JSON)."
    )


class WaitingFor(BaseModel):
    event: str
    iteration: int = Field(description="The loop iteration of the waiting node (0 outside loops).")


class RunDetail(OutputFields):
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    created_ms: int
    updated_ms: int
    ended_ms: int | None
    current: str | None
    error: StepError
    redrives: int
    nodes: list[NodeViewModel]
    totals: RunTotals
    restart_tax_avoided: RestartTaxView
    fusion_saved: FusionSavedView = Field(default_factory=FusionSavedView)
    crash_events: list[CrashEventView]
    waiting_for: WaitingFor | None = Field(
        default=None, description="While the run waits for an event: what to deliver (POST events/{event}?iteration=)."
    )
    parent: str | None = Field(default=None, description="A child run's parent: <run id>/<node key>/<branch>.")
    children: list[dict[str, Any]] = Field(
        default_factory=list, description="Child runs (call/parallel nodes): id, node, branch, status, totals."
    )
    state: Any = Field(
        default=None,
        description="The run's durable state (Workflow(state=...)): its fields, or {blob, bytes} when stored in S3.",
    )
    forked_from: ForkOrigin | None = Field(default=None, description="A fork's source run, node and iteration.")
    links: Links


class StepDetail(OutputFields):
    """A step's record, its output (once it succeeded) and its input, served like its output: inline,
    behind a presigned URL when offloaded to S3, or omitted when nested too deeply."""

    has_input: bool = Field(default=False, description="False until the step's input is known (it started).")
    input: Any = Field(default=None, description="The step's input, when it is small enough to be inline.")
    input_url: str | None = Field(default=None, description="Presigned GET URL of an offloaded input.")
    input_bytes: int = 0
    input_omitted: str | None = Field(default=None, description="Why a stored input is not inline.")
    run_id: str
    step: str
    key: str
    index: int | None
    kind: str
    status: NodeStatus
    attempts: int
    invocations: int
    crashes: int
    checkpoint_hits: int
    duration_ms: int
    created_ms: int
    started_ms: int | None
    ended_ms: int | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    error: StepError
    wake_at_ms: int | None
    event_name: str | None
    items_total: int | None
    history: list[InvocationView]
    copied_from: str | None = Field(default=None, description="A fork's copy of this step of that run (not run here).")


class EventAccepted(BaseModel):
    run_id: str
    event: str
    iteration: int = Field(default=0, description="The loop iteration whose wait the event is for.")
    status: Literal["delivered", "buffered"] = Field(
        description="delivered: the run was waiting and resumes; buffered: kept until the run reaches the wait."
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: e.g. run_not_found, invalid_run_state.")
    message: ErrorMessage
    details: list[dict[str, Any]] | None = Field(default=None, description="Per-field problems (validation).")


class ErrorResponse(BaseModel):
    error: ErrorDetail
