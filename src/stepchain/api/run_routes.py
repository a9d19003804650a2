"""The run routes of the runs API (``/runs`` and ``/runs/{run_id}/...``; the API's routes and errors:
:mod:`stepchain.api.app`), on a Powertools ``Router`` the resolver includes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.metrics import MetricUnit

from stepchain.api.cursors import decode_cursor, encode_cursor, is_cursor_rejection
from stepchain.api.errors import ApiError
from stepchain.api.listing import list_all
from stepchain.api.models import (
    EVENT_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    RUN_ID_PATTERN,
    STEP_PATTERN,
    WORKFLOW_PATTERN,
    BudgetRequest,
    ErrorResponse,
    EventAccepted,
    ForkRequest,
    Links,
    RedriveRequest,
    RunDetail,
    RunHandle,
    RunList,
    RunSummary,
    StartRunRequest,
    StepDetail,
)
from stepchain.api.ownership import caller_of
from stepchain.api.resolver import app, metrics
from stepchain.api.security import check_input_size
from stepchain.api.views import (
    IterationQuery,
    accepted,
    input_ref,
    output_fields,
    output_if_done,
    step_fields,
    waiting_for,
)
from stepchain.engine import Engine
from stepchain.engine.runs import RunService
from stepchain.exceptions import InvalidRunState, StepNotFound
from stepchain.observe.ledger import node_kind
from stepchain.store.records import RunRecord, RunStatus, node_key, parse_node_key

MAX_PAGE = 100

router = Router()  # type: ignore[no-untyped-call]


def get_runs() -> RunService:
    """Dependency: the run service of the engine :func:`stepchain.api.app.handle_api_event` put in the
    resolver's context."""
    return cast(Engine, router.context["engine"]).runs


RunsDep = Annotated[RunService, Depends(get_runs)]
#: "any JSON value" as a body type. Spelled as a union with a list because Powertools' validation
#: replaces a list body by its first element unless the declared type admits a sequence.
AnyJson = Any | list[Any]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="24 lowercase hex characters.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retrying with the same key and body returns the same run; another body is a 409.",
    ),
]
#: what starting or forking a run answers when the same Idempotency-Key and body were seen before
SAME_RUN = {
    200: {
        "description": "The same Idempotency-Key and body were seen before: that run",
        "content": {content_types.APPLICATION_JSON: {"model": RunHandle}},
    }
}


# ------------------------------------------------------------------------------------ helpers
def _errors(*codes: int) -> dict[int, Any]:
    """OpenAPI error responses (they all share :class:`ErrorResponse`)."""
    return {
        c: {"description": HTTPStatus(c).phrase, "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}}}
        for c in codes
    }


def responses(status: int, description: str, *errors: int, also: dict[int, Any] | None = None) -> dict[int, Any]:
    return {status: {"description": description}, **(also or {}), **_errors(500, *errors)}


#: what a route with a JSON request body can also answer (decoding.py: 400, 413, 415, 422)
BODY_ERRORS = (400, 413, 415, 422)


def _prefix() -> str:
    """The stage (or base path) API Gateway put before the resource path: ``/v1`` in ``/v1/runs``."""
    event = app.current_event  # the resolver's (typed) view of the event the router serves
    full = event.request_context.path or ""
    path = event.path or ""
    return full[: -len(path)] if path and full.endswith(path) else ""


def _links(run_id: str) -> Links:
    base = f"{_prefix()}/runs/{run_id}"
    return Links(
        self=base,
        steps=base + "/steps/{step}",
        events=base + "/events/{name}",
        cancel=base + "/cancel",
        redrive=base + "/redrive",
        fork=base + "/fork",
    )


def _handle(run: RunRecord) -> RunHandle:
    return RunHandle(
        run_id=run.run_id, workflow=run.workflow, version=run.version, status=run.status, links=_links(run.run_id)
    )


# ------------------------------------------------------------------------------------- routes
@router.post(
    "/runs",
    summary="Start a run",
    operation_id="startRun",
    responses=responses(202, "Started", 404, 409, *BODY_ERRORS, also=SAME_RUN),
    status_code=202,
)
def start_run(
    runs: RunsDep, body: Annotated[StartRunRequest, Body()], idempotency_key: IdempotencyKey = None
) -> Response[RunHandle]:
    check_input_size(body.input)  # 413 limit_exceeded over STEPCHAIN_MAX_INPUT_BYTES
    owner = caller_of(router.current_event.raw_event).owner
    run, created = runs.start(
        body.workflow, body.input, idempotency_key=idempotency_key, owner=owner, budget_usd=body.budget_usd
    )
    if created:
        metrics.add_metric(name="RunsStarted", unit=MetricUnit.Count, value=1)
    return _created(run, created)


def _created(run: RunRecord, created: bool) -> Response[RunHandle]:
    handle = _handle(run)
    return Response(
        status_code=202 if created else 200,
        content_type=content_types.APPLICATION_JSON,
        body=handle,
        headers={"Location": handle.links.self},
    )


@router.get(
    "/runs",
    summary="List runs, newest first",
    operation_id="listRuns",
    responses=responses(200, "A page of runs", 400, 404),
)
def list_runs(
    runs: RunsDep,
    workflow: Annotated[
        str | None,
        Query(pattern=WORKFLOW_PATTERN, description="Default: the runs of every deployed workflow."),
    ] = None,
    status: Annotated[RunStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page.")] = None,
) -> RunList:
    if workflow is None:
        names = runs.registry.names()
        if len(names) != 1:  # every workflow's runs, merged newest first (api/listing.py)
            owner = caller_of(router.current_event.raw_event).list_owner
            found, nxt = list_all(runs, status, limit, cursor, owner, _summary)
            return RunList(runs=found, next_cursor=nxt)
        workflow = names[0]
    inner = None if cursor is None else decode_cursor(cursor, workflow, status)
    try:
        owner = caller_of(router.current_event.raw_event).list_owner  # None: an operator lists every run
        page = runs.list_runs(workflow, status=status, limit=limit, cursor=inner, owner=owner)
    except Exception as exc:
        if inner is None or not is_cursor_rejection(exc):
            raise
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
    if not page.runs and inner is None and workflow not in runs.registry.names():
        runs.registry.get(workflow)  # no such workflow, and no runs of a retired one: 404
    return RunList(runs=[_summary(r) for r in page.runs], next_cursor=encode_cursor(workflow, status, page.cursor))


def _summary(r: RunRecord) -> RunSummary:
    return RunSummary(
        **_handle(r).model_dump(),
        created_ms=r.created_ms,
        updated_ms=r.updated_ms,
        ended_ms=r.ended_ms,
        current=r.current or None,
        error=r.error,
    )


@router.get(
    "/runs/<run_id>",
    summary="A run's ledger and output",
    operation_id="getRun",
    responses=responses(200, "The run", 400, 404),
)
def get_run(runs: RunsDep, run_id: RunId) -> RunDetail:
    run = runs.get_run(run_id)
    view = runs.describe_run(run).to_dict()
    out = output_fields(runs, run.output_ref) if run.status is RunStatus.SUCCEEDED else {}
    waiting = waiting_for(runs.registry.find(run.workflow, run.version), run)
    return RunDetail.model_validate({**view, **out, "waiting_for": waiting, "links": _links(run_id)})


@router.get(
    "/runs/<run_id>/steps/<step>",
    summary="One step (or map item), its input and its output",
    operation_id="getStep",
    responses=responses(200, "The step", 400, 404),
)
def get_step(
    runs: RunsDep,
    run_id: RunId,
    step: Annotated[str, Path(pattern=STEP_PATTERN)],
    index: Annotated[int | None, Query(ge=0, description="Map item number (0-based).")] = None,
) -> StepDetail:
    run, (step, iteration, _) = runs.get_run(run_id), parse_node_key(step)  # think~00003: iteration 3
    wf = runs.registry.find(run.workflow, run.version)  # None: read from the records alone
    if wf is not None and not wf.has_node(step):
        raise StepNotFound(f"workflow {run.workflow!r} has no step {step!r}")
    top = runs.node(run_id, node_key(step, None, iteration)) if wf is None else None
    kind = wf.node(step).kind.value if wf is not None else None if top is None else node_kind(top, None)
    maps = wf.node(step).has_items if wf is not None else top is None or top.items_total is not None
    if index is not None and not maps:
        raise StepNotFound(f"step {step!r} is not a map: it has no item {index}")
    rec = top if top is not None and index is None else runs.node(run_id, node_key(step, index, iteration))
    if rec is None:
        what = step if index is None else f"item {index} of {step!r}"
        raise StepNotFound(f"{what} has not started in run {run_id}")
    fields = {**step_fields(rec, kind or node_kind(rec, None)), **output_if_done(runs, rec)}
    fields.update(output_fields(runs, input_ref(runs, wf, rec), "input"))
    fields["history"] = [h.to_dict() for h in runs.node_history(run_id, rec)]  # H# items too
    return StepDetail.model_validate(fields)


@router.post(
    "/runs/<run_id>/events/<name>",
    summary="Deliver an event to a run",
    operation_id="sendEvent",
    responses=responses(202, "Delivered, or buffered until the run reaches the wait", 404, 409, *BODY_ERRORS),
    status_code=202,
)
def send_event(
    runs: RunsDep,
    run_id: RunId,
    name: Annotated[str, Path(pattern=EVENT_PATTERN)],
    payload: Annotated[AnyJson, Body(description="The event's payload (any JSON); an empty body is null.")] = None,
    iteration: IterationQuery = None,
) -> EventAccepted:
    run = runs.get_run(run_id)
    if run.status.finished:
        raise InvalidRunState(f"run {run_id} is {run.status.value}; it takes no events")
    wf = runs.registry.find(run.workflow, run.version)  # None: deliver_event fails the run, 409
    if name == "budget" and run.budget_nano is not None and not (wf is not None and wf.waits_for(name)):
        runs.approve_budget(run_id)  # approve the step the run's budget holds (409 when none is held)
        return EventAccepted(run_id=run_id, event=name, iteration=iteration or 0, status="delivered")
    if wf is not None and not wf.waits_for(name):
        raise ApiError(404, "event_not_found", f"workflow {run.workflow!r} does not wait for an event named {name!r}")
    result = runs.deliver_event(run_id, name, payload, iteration=iteration)
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    return EventAccepted(run_id=run_id, event=name, iteration=iteration or 0, status=accepted(result))


@router.post(
    "/runs/<run_id>/budget",
    summary="Set a budgeted run's dollar budget",
    operation_id="setRunBudget",
    responses=responses(200, "The budget is set; a run held by its budget goes on", 404, 409, *BODY_ERRORS),
)
def set_run_budget(runs: RunsDep, run_id: RunId, body: Annotated[BudgetRequest, Body()]) -> RunHandle:
    return _handle(runs.raise_budget(run_id, body.budget_usd))


@router.post(
    "/runs/<run_id>/cancel",
    summary="Cancel an active run",
    operation_id="cancelRun",
    responses=responses(200, "Cancelled", 400, 404, 409),
)
def cancel_run(runs: RunsDep, run_id: RunId) -> RunHandle:
    run = runs.cancel(run_id)
    metrics.add_metric(name="RunsCancelled", unit=MetricUnit.Count, value=1)
    return _handle(run)


@router.post(
    "/runs/<run_id>/redrive",
    summary="Resume a FAILED run at its failed step",
    operation_id="redriveRun",
    responses=responses(202, "Resumed", 404, 409, *BODY_ERRORS),
    status_code=202,
)
def redrive_run(
    runs: RunsDep,
    run_id: RunId,
    body: Annotated[RedriveRequest | None, Body()] = None,
) -> RunHandle:
    replace = body is not None and "input" in body.model_fields_set
    keep = body.keep_progress if body else None
    if replace:
        check_input_size(body.input if body else None)
    run = runs.redrive(run_id, input=body.input if body else None, replace_input=replace, keep_progress=keep)
    metrics.add_metric(name="RunsRedriven", unit=MetricUnit.Count, value=1)
    return _handle(run)


@router.post(
    "/runs/<run_id>/fork",
    summary="Fork a run from a step: a new run starting there, the checkpoints before it copied",
    operation_id="forkRun",
    responses=responses(202, "Forked: the new run", 404, 409, *BODY_ERRORS, also=SAME_RUN),
    status_code=202,
)
def fork_run(
    runs: RunsDep, run_id: RunId, body: Annotated[ForkRequest, Body()], idempotency_key: IdempotencyKey = None
) -> Response[RunHandle]:
    replace = "input" in body.model_fields_set
    if replace:
        check_input_size(body.input)
    run, created = runs.fork(
        run_id,
        body.node,
        iteration=body.iteration,
        input=body.input,
        replace_input=replace,
        state=body.state,
        idempotency_key=idempotency_key,
        owner=caller_of(router.current_event.raw_event).owner,
    )
    if created:
        metrics.add_metric(name="RunsForked", unit=MetricUnit.Count, value=1)
    return _created(run, created)
