"""The runs API's resolver: the Powertools ``APIGatewayRestResolver`` every route registers on (the
routes: :mod:`stepchain.api.run_routes`, :mod:`stepchain.api.approvals`; the entry point and the
OpenAPI document: :mod:`stepchain.api.app`), its logger and metrics, and the mapping of exceptions to
the ``{"error": {...}}`` responses."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit

from stepchain.api.models import ErrorResponse
from stepchain.api.ownership import guard
from stepchain.exceptions import StepchainError

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "stepchain")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "stepchain")


# Bodies reach Powertools already decoded and re-serialized by stepchain.api.decoding.
app = APIGatewayRestResolver(enable_validation=True)
app.use(middlewares=[guard])  # every route with a {run_id}: the owner or an operator, else 404


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response[Any]:
    body = ErrorResponse.model_validate({"error": {"code": code, "message": message, "details": details}})
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump(exclude_none=True),
    )


# ----------------------------------------------------------------------------- error mapping
_Handler = TypeVar("_Handler", bound=Callable[..., Response[Any]])


def _on(exc: type[Exception] | list[type[Exception]]) -> Callable[[_Handler], _Handler]:
    """``app.exception_handler``, typed."""
    return cast(Callable[[_Handler], _Handler], app.exception_handler(exc))


@_on(StepchainError)
def _stepchain_error(exc: StepchainError) -> Response[Any]:
    if exc.http_status >= 500:
        return _internal(exc)
    return error_response(exc.http_status, exc.code, str(exc), getattr(exc, "details", None))


@_on(RequestValidationError)
def _validation_error(exc: RequestValidationError) -> Response[Any]:
    errors = list(exc.errors())
    if any(e.get("loc", ("",))[0] == "response" for e in errors):
        return _internal(exc)  # a response that does not match its model is a bug here
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "request body is not valid JSON")
    details = [{"loc": list(e.get("loc", ())), "type": e.get("type", ""), "msg": str(e.get("msg", ""))} for e in errors]
    if all(e["loc"][:1] == ["body"] for e in details):
        return error_response(422, "validation_error", "request body does not match the schema", details)
    return error_response(400, "invalid_parameter", "invalid path, query or header parameter", details)


@_on(Exception)
def _unexpected(exc: Exception) -> Response[Any]:
    return _internal(exc)


def _internal(exc: Exception) -> Response[Any]:
    logger.exception("internal error", extra={"error_type": type(exc).__name__})
    metrics.add_metric(name="ApiFaults", unit=MetricUnit.Count, value=1)
    request_id = app.current_event.request_context.request_id or ""
    return error_response(500, "internal_error", f"internal error (request id {request_id})")
