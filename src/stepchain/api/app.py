"""The runs API behind API Gateway (REST API, Lambda proxy integration).

Routes (the OpenAPI document, ``openapi.json`` at the repository root, is generated from them)::

    POST /runs                               start a run (Idempotency-Key header)         202 (200 on replay)
    GET  /runs?workflow=&status=&limit=&cursor=   list runs, newest first                 200
    GET  /runs/{run_id}                      the run's ledger and its output              200
    GET  /runs/{run_id}/steps/{step}?index=  one step (or map item) and its output        200
    POST /runs/{run_id}/events/{name}?iteration=  deliver an event (body: any JSON)       202
    POST /runs/{run_id}/cancel               cancel an active run                         200
    POST /runs/{run_id}/redrive              resume a FAILED run ({"input", "keep_progress"}) 202
    POST /runs/{run_id}/fork                 fork: a new run from a step ({"node", "iteration", "input", "state"};
                                             Idempotency-Key)                             202 (200 on replay)
    POST /runs/{run_id}/budget               set a budgeted run's budget ({"budget_usd"})  200
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

Request bodies are decoded in one place, :mod:`stepchain.api.decoding`, before any route runs. This
module is the entry point and the OpenAPI document; the routes are :mod:`stepchain.api.run_routes` and
:mod:`stepchain.api.approvals`, the resolver and the exception -> error mapping :mod:`stepchain.api.resolver`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths

from stepchain.api.approvals import router as approvals_router
from stepchain.api.decoding import MAX_BODY_BYTES, BodySpec, RequestRejected, body_specs, normalize
from stepchain.api.errors import ApiError, rejected_response
from stepchain.api.ownership import check_configuration
from stepchain.api.resolver import app, error_response, logger, metrics
from stepchain.api.run_routes import responses
from stepchain.api.run_routes import router as runs_router
from stepchain.api.stream import router as stream_router
from stepchain.engine import Engine

__all__ = ["MAX_BODY_BYTES", "ApiError", "app", "handle_api_event", "main", "openapi_json"]

app.include_router(runs_router)
app.include_router(approvals_router)
app.include_router(stream_router)


@app.get(
    "/openapi.json",
    summary="This API's OpenAPI document",
    operation_id="getOpenApi",
    responses=responses(200, "OpenAPI 3.1 document"),
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


@app.not_found
def _no_route(exc: NotFoundError) -> Response[Any]:
    method = app.current_event.http_method.upper()
    path = app.context.get("_path") or app.current_event.path
    allowed = sorted(m for rx, m in _route_table() if rx.match(path) and m != method)
    if allowed:
        resp = error_response(405, "method_not_allowed", f"{method} is not allowed here; use {', '.join(allowed)}")
        resp.headers["Allow"] = ", ".join(allowed)
        return resp
    return error_response(404, "route_not_found", f"no route {method} {path}")


@functools.cache
def _routes() -> list[tuple[re.Pattern[str], str, BodySpec | None]]:
    """(path regex, method, request body spec) of every route, from the OpenAPI document."""
    return body_specs(json.loads(openapi_json()))


def _route_table() -> list[tuple[re.Pattern[str], str]]:
    """(path regex, method) of every route (for 405 vs 404)."""
    return [(rx, m) for rx, m, _ in _routes()]


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
