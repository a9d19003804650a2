"""The API's own client errors."""

from __future__ import annotations

from stepchain.exceptions import StepchainError


class ApiError(StepchainError):
    """A client mistake the API itself detects; carries its own status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


__all__ = ["ApiError"]
