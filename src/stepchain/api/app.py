"""The runs API behind API Gateway (REST API, Lambda proxy integration).

Routes (the OpenAPI document, ``openapi.json`` at the repository root, is generated from them)::

    POST /runs                               start a run (Idempotency-Key header)         202 (200 on replay)
    GET  /runs?workflow=&status=&limit=&cursor=   list runs, newest first                 200
    GET  /runs/{run_id}                      the run's ledger and its output              200
    GET  /runs/{run_id}/steps/{step}?index=  one step (or map item) and its output        200
    POST /runs/{run_id}/events/{name}?iteration=  deliver an event (body: any JSON)       202
    POST /runs/{run_id}/cancel               cancel an active run                         200
    POST /runs/{run_id}/redrive              resume a FAILED run ({"input", "keep_progress"}) 202
    POST /runs/{run_id}/approvals            mint an approval token ({"event", "ttl_s"})   201
    POST /approvals                          deliver the Approval-Token header's event, once      202
    GET  /openapi.json                       this API's OpenAPI document                  200

Every error is ``{"error": {"code": ..., "message": ..., "details": [...]}}``:

* 400: the request line or headers are wrong (malformed run id, bad query parameter, bad
  ``Idempotency-Key``, bad cursor) or the body
  is not JSON (``malformed_json``) or not base64 / UTF-8 (``malformed_body``);
* 422: the body is JSON but not of the expected shape, or not a value that can be stored and
  served back (nested over 64 levels, an integer over 4,300 digits, a lone surrogate):
  ``validation_error``;
* 404: unknown route, run, step, event name, or workflow (an unknown workflow in ``POST /runs``
  is 404 ``workflow_not_found`` too); a run of another caller is the same 404 (api/ownership.py);
* 405 wrong method (with ``Allow``), 409 wrong run state, idempotency conflict, or a run whose
  workflow version this deployment does not register (``version_not_registered``, the run is
  failed), 413 body over 256 KiB, 415 a body that is not ``application/json``;
* 500: our fault; the body says only ``internal_error`` and the request id (the log has the rest).

Request bodies are decoded in one place, :mod:`stepchain.api.decoding`, before any route runs.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from stepchain.api.approvals import router as approvals_router
from stepchain.api.cursors import decode_cursor, encode_cursor, is_cursor_rejection
from stepchain.api.decoding import (
    MAX_BODY_BYTES,
    BodySpec,
    RequestRejected,
    body_specs,
    normalize,
)
from stepchain.api.errors import ApiError, rejected_response
from stepchain.api.listing import list_all
from stepchain.api.models import (
    EVENT_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    RUN_ID_PATTERN,
    STEP_PATTERN,
    WORKFLOW_PATTERN,
    ErrorResponse,
    EventAccepted,
    Links,
    RedriveRequest,
    RunDetail,
    RunHandle,
    RunList,
    RunSummary,
    StartRunRequest,
    StepDetail,
)
from stepchain.api.ownership import caller_of, check_configuration, guard
from stepchain.api.security import check_input_size
from stepchain.api.stream import router as stream_router
from stepchain.api.views import IterationQuery, accepted, output_fields, output_if_done, step_fields, waiting_for
from stepchain.engine import Engine
from stepchain.engine.runs import RunService
from stepchain.exceptions import (
    InvalidRunState,
    StepchainError,
    StepNotFound,
)
from stepchain.ledger import node_kind
from stepchain.records import RunRecord, RunStatus, node_key, parse_node_key

__all__ = ["MAX_BODY_BYTES", "ApiError", "app", "handle_api_event", "main", "openapi_json"]

MAX_PAGE = 100

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "stepchain")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "stepchain")


# Bodies reach Powertools already decoded and re-serialized by stepchain.api.decoding.
app = APIGatewayRestResolver(enable_validation=True)
app.use(middlewares=[guard])  # every route with a {run_id}: the owner or an operator, else 404


def get_runs() -> RunService:
    """Dependency: the run service of the engine :func:`handle_api_event` put in the resolver's context."""
    return cast(Engine, app.context["engine"]).runs


RunsDep = Annotated[RunService, Depends(get_runs)]
#: "any JSON value" as a body type. Spelled as a union with a list because Powertools' validation
#: replaces a list body by its first element unless the declared type admits a sequence.
AnyJson = Any | list[Any]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="24 lowercase hex characters.")]


# ------------------------------------------------------------------------------------ helpers
def _errors(*codes: int) -> dict[int, Any]:
    """OpenAPI error responses (they all share :class:`ErrorResponse`)."""
    return {
        c: {"description": HTTPStatus(c).phrase, "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}}}
        for c in codes
    }


def _responses(status: int, description: str, *errors: int, also: dict[int, Any] | None = None) -> dict[int, Any]:
    return {status: {"description": description}, **(also or {}), **_errors(500, *errors)}


#: what a route with a JSON request body can also answer (decoding.py: 400, 413, 415, 422)
BODY_ERRORS = (400, 413, 415, 422)


def _prefix() -> str:
    """The stage (or base path) API Gateway put before the resource path: ``/v1`` in ``/v1/runs``."""
    event = app.current_event
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
    )


def _handle(run: RunRecord) -> RunHandle:
    return RunHandle(
        run_id=run.run_id, workflow=run.workflow, version=run.version, status=run.status, links=_links(run.run_id)
    )


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response[Any]:
    body = ErrorResponse.model_validate({"error": {"code": code, "message": message, "details": details}})
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump(exclude_none=True),
    )


# ------------------------------------------------------------------------------------- routes
@app.post(
    "/runs",
    summary="Start a run",
    operation_id="startRun",
    responses=_responses(
        202,
        "Started",
        404,
        409,
        *BODY_ERRORS,
        also={
            200: {
                "description": "The same Idempotency-Key and body were seen before: that run",
                "content": {content_types.APPLICATION_JSON: {"model": RunHandle}},
            }
        },
    ),
    status_code=202,
)
def start_run(
    runs: RunsDep,
    body: Annotated[StartRunRequest, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Retrying with the same key and body returns the same run; another body is a 409.",
        ),
    ] = None,
) -> Response[RunHandle]:
    check_input_size(body.input)  # 413 limit_exceeded over STEPCHAIN_MAX_INPUT_BYTES
    owner = caller_of(app.current_event.raw_event).owner
    run, created = runs.start(body.workflow, body.input, idempotency_key=idempotency_key, owner=owner)
    if created:
        metrics.add_metric(name="RunsStarted", unit=MetricUnit.Count, value=1)
    handle = _handle(run)
    return Response(
        status_code=202 if created else 200,
        content_type=content_types.APPLICATION_JSON,
        body=handle,
        headers={"Location": handle.links.self},
    )


@app.get(
    "/runs",
    summary="List runs, newest first",
    operation_id="listRuns",
    responses=_responses(200, "A page of runs", 400, 404),
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
            owner = caller_of(app.current_event.raw_event).list_owner
            found, nxt = list_all(runs, status, limit, cursor, owner, _summary)
            return RunList(runs=found, next_cursor=nxt)
        workflow = names[0]
    inner = None if cursor is None else decode_cursor(cursor, workflow, status)
    try:
        owner = caller_of(app.current_event.raw_event).list_owner  # None: an operator lists every run
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


@app.get(
    "/runs/<run_id>",
    summary="A run's ledger and output",
    operation_id="getRun",
    responses=_responses(200, "The run", 400, 404),
)
def get_run(runs: RunsDep, run_id: RunId) -> RunDetail:
    run = runs.get_run(run_id)
    view = runs.describe_run(run).to_dict()
    out = output_fields(runs, run.output_ref) if run.status is RunStatus.SUCCEEDED else {}
    waiting = waiting_for(runs.registry.find(run.workflow, run.version), run)
    return RunDetail.model_validate({**view, **out, "waiting_for": waiting, "links": _links(run_id)})


@app.get(
    "/runs/<run_id>/steps/<step>",
    summary="One step (or map item) and its output",
    operation_id="getStep",
    responses=_responses(200, "The step", 400, 404),
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
    fields["history"] = [h.to_dict() for h in runs.node_history(run_id, rec)]  # H# items too
    return StepDetail.model_validate(fields)


@app.post(
    "/runs/<run_id>/events/<name>",
    summary="Deliver an event to a run",
    operation_id="sendEvent",
    responses=_responses(202, "Delivered, or buffered until the run reaches the wait", 404, 409, *BODY_ERRORS),
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
    if wf is not None and not wf.waits_for(name):
        raise ApiError(404, "event_not_found", f"workflow {run.workflow!r} does not wait for an event named {name!r}")
    result = runs.deliver_event(run_id, name, payload, iteration=iteration)
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    return EventAccepted(run_id=run_id, event=name, iteration=iteration or 0, status=accepted(result))


@app.post(
    "/runs/<run_id>/cancel",
    summary="Cancel an active run",
    operation_id="cancelRun",
    responses=_responses(200, "Cancelled", 400, 404, 409),
)
def cancel_run(runs: RunsDep, run_id: RunId) -> RunHandle:
    run = runs.cancel(run_id)
    metrics.add_metric(name="RunsCancelled", unit=MetricUnit.Count, value=1)
    return _handle(run)


@app.post(
    "/runs/<run_id>/redrive",
    summary="Resume a FAILED run at its failed step",
    operation_id="redriveRun",
    responses=_responses(202, "Resumed", 404, 409, *BODY_ERRORS),
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


app.include_router(approvals_router)
app.include_router(stream_router)


@app.get(
    "/openapi.json",
    summary="This API's OpenAPI document",
    operation_id="getOpenApi",
    responses=_responses(200, "OpenAPI 3.1 document"),
)
def openapi_document() -> Response[Any]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_json())


@functools.cache
def openapi_json() -> str:
    """The OpenAPI document (what ``openapi.json`` at the repository root holds).

    Powertools documents a 422 on every route; a route without a request body never answers one,
    so it is taken out (with the schemas only it referred to): the document lists what can happen."""
    doc = json.loads(
        app.get_openapi_json_schema(
            title="stepchain runs API",
            version="1.0.0",
            description=(__doc__ or "").split("\n\n", 1)[0],
        )
    )
    for ops in doc["paths"].values():
        for op in ops.values():
            if "requestBody" not in op:
                op["responses"].pop("422", None)
    schemas = doc["components"]["schemas"]
    while unused := [n for n in schemas if f'"#/components/schemas/{n}"' not in json.dumps(doc)]:
        for name in unused:
            del schemas[name]
    return json.dumps(doc, indent=2) + "\n"


# ----------------------------------------------------------------------------- error mapping
_Handler = TypeVar("_Handler", bound=Callable[..., Response[Any]])


def _on(exc: type[Exception] | list[type[Exception]]) -> Callable[[_Handler], _Handler]:
    """``app.exception_handler``, typed."""
    return cast(Callable[[_Handler], _Handler], app.exception_handler(exc))


@_on(StepchainError)
def _stepchain_error(exc: StepchainError) -> Response[Any]:
    if exc.http_status >= 500:
        return _internal(exc)
    return _error(exc.http_status, exc.code, str(exc), getattr(exc, "details", None))


@_on(RequestValidationError)
def _validation_error(exc: RequestValidationError) -> Response[Any]:
    errors = list(exc.errors())
    if any(e.get("loc", ("",))[0] == "response" for e in errors):
        return _internal(exc)  # a response that does not match its model is a bug here
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, "malformed_json", "request body is not valid JSON")
    details = [{"loc": list(e.get("loc", ())), "type": e.get("type", ""), "msg": str(e.get("msg", ""))} for e in errors]
    if all(e["loc"][:1] == ["body"] for e in details):
        return _error(422, "validation_error", "request body does not match the schema", details)
    return _error(400, "invalid_parameter", "invalid path, query or header parameter", details)


@app.not_found
def _no_route(exc: NotFoundError) -> Response[Any]:
    method = app.current_event.http_method.upper()
    path = app.context.get("_path") or app.current_event.path
    allowed = sorted(m for rx, m in _route_table() if rx.match(path) and m != method)
    if allowed:
        resp = _error(405, "method_not_allowed", f"{method} is not allowed here; use {', '.join(allowed)}")
        resp.headers["Allow"] = ", ".join(allowed)
        return resp
    return _error(404, "route_not_found", f"no route {method} {path}")


@functools.cache
def _routes() -> list[tuple[re.Pattern[str], str, BodySpec | None]]:
    """(path regex, method, request body spec) of every route, from the OpenAPI document."""
    return body_specs(json.loads(openapi_json()))


def _route_table() -> list[tuple[re.Pattern[str], str]]:
    """(path regex, method) of every route (for 405 vs 404)."""
    return [(rx, m) for rx, m, _ in _routes()]


@_on(Exception)
def _unexpected(exc: Exception) -> Response[Any]:
    return _internal(exc)


def _internal(exc: Exception) -> Response[Any]:
    logger.exception("internal error", extra={"error_type": type(exc).__name__})
    metrics.add_metric(name="ApiFaults", unit=MetricUnit.Count, value=1)
    request_id = app.current_event.request_context.request_id or ""
    return _error(500, "internal_error", f"internal error (request id {request_id})")


# ------------------------------------------------------------------------------- entry point
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def _serve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        try:
            normalize(event, _routes())  # the one request-decoding layer: see stepchain.api.decoding
        except RequestRejected as rej:
            return rejected_response(rej)
        return app.resolve(event, context)
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()


def handle_api_event(engine: Engine, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Serve one API Gateway (REST, Lambda proxy) event with ``engine``."""
    check_configuration()  # fails closed: a deployment without keys or with a bad mode serves nothing
    append_context: Callable[..., None] = app.append_context
    append_context(engine=engine)
    return _serve(event, context)


def main(argv: list[str] | None = None, out: Callable[[str], Any] = sys.stdout.write) -> int:
    """``python -m stepchain.api.app --openapi > openapi.json``"""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--openapi"]:
        sys.stderr.write("usage: python -m stepchain.api.app --openapi > openapi.json\n")
        return 2
    out(openapi_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
