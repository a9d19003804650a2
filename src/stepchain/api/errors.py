"""The API's own client errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepchain.exceptions import StepchainError

if TYPE_CHECKING:
    from stepchain.api.decoding import RequestRejected


class ApiError(StepchainError):
    """A client mistake the API itself detects; carries its own status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


def rejected_response(rej: RequestRejected) -> dict[str, Any]:
    """A request the decoding layer refused, as an API Gateway proxy response (no route ran)."""
    from stepchain.api.models import ErrorResponse

    body = ErrorResponse.model_validate(
        {"error": {"code": rej.code, "message": rej.message, "details": rej.details}}
    ).model_dump_json(exclude_none=True)
    return {
        "statusCode": rej.status,
        "body": body,
        "isBase64Encoded": False,
        "multiValueHeaders": {"Content-Type": ["application/json"]},
    }


__all__ = ["ApiError", "rejected_response"]
