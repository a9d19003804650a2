"""The runs HTTP API (API Gateway REST API, Lambda proxy integration), built on Powertools' event handler.

``stepchain.runtimes.aws.api_handler`` serves it through :func:`stepchain.api.app.handle_api_event`;
``python -m stepchain.api.app --openapi`` prints its OpenAPI document. Names are imported lazily, so
that ``python -m stepchain.api.app`` does not import the module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepchain.api.app import MAX_BODY_BYTES, ApiError, app, handle_api_event, openapi_json

__all__ = ["MAX_BODY_BYTES", "ApiError", "app", "handle_api_event", "openapi_json"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("stepchain.api.app"), name)
    raise AttributeError(f"module 'stepchain.api' has no attribute {name!r}")
