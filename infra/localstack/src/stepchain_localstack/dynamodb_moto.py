"""DynamoDB served by the moto that LocalStack bundles (provider ``dynamodb:moto``).

Stock LocalStack serves DynamoDB by downloading Java and DynamoDB Local at first use, which fails offline.
This provider implements no operation itself: every call raises ``NotImplementedError`` in the ASF
skeleton, and LocalStack's ``MotoFallbackDispatcher`` forwards it to moto's in-process backend
(conditional writes with ``ReturnValuesOnConditionCheckFailure``, transactions, GSIs, TTL spec, ...).
Select it with ``PROVIDER_OVERRIDE_DYNAMODB=moto``.

moto's DynamoDB backend is not thread-safe (a query iterating a partition while another request
inserts into it can fail with "dictionary changed size during iteration", which reaches the caller
as a 500), and LocalStack serves requests on several threads. Every operation therefore runs under
one lock, which is how DynamoDB Local would serialize them too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from localstack.aws.api.dynamodb import DynamodbApi
from localstack.services.moto import MotoFallbackDispatcher
from localstack.services.plugins import Service, ServiceLifecycleHook, aws_provider

__all__ = ["MotoDynamoDBProvider", "dynamodb_moto"]


class MotoDynamoDBProvider(DynamodbApi, ServiceLifecycleHook):
    """Empty ASF provider: everything falls through to moto."""

    service = "dynamodb"


_BACKEND_LOCK = threading.RLock()


def _serialized(handler: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _BACKEND_LOCK:
            return handler(*args, **kwargs)

    return locked


def serialized_moto_dispatcher(provider: object) -> Any:
    """LocalStack's moto fallthrough dispatch table, one operation at a time."""
    table = MotoFallbackDispatcher(provider)
    for op, handler in list(table.items()):
        table[op] = _serialized(handler)
    return table


@aws_provider(api="dynamodb", name="moto")  # type: ignore[untyped-decorator]
def dynamodb_moto() -> Service:
    return Service.for_provider(MotoDynamoDBProvider(), dispatch_table_factory=serialized_moto_dispatcher)
