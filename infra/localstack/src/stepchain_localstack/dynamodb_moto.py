"""DynamoDB served by the moto that LocalStack bundles (provider ``dynamodb:moto``).

Stock LocalStack serves DynamoDB by downloading Java and DynamoDB Local at first use, which fails offline.
This provider implements no operation itself: every call raises ``NotImplementedError`` in the ASF
skeleton, and LocalStack's ``MotoFallbackDispatcher`` forwards it to moto's in-process backend
(conditional writes with ``ReturnValuesOnConditionCheckFailure``, transactions, GSIs, TTL spec, ...).
Select it with ``PROVIDER_OVERRIDE_DYNAMODB=moto``.
"""

from __future__ import annotations

from localstack.aws.api.dynamodb import DynamodbApi
from localstack.services.moto import MotoFallbackDispatcher
from localstack.services.plugins import Service, ServiceLifecycleHook, aws_provider

__all__ = ["MotoDynamoDBProvider", "dynamodb_moto"]


class MotoDynamoDBProvider(DynamodbApi, ServiceLifecycleHook):
    """Empty ASF provider: everything falls through to moto."""

    service = "dynamodb"


@aws_provider(api="dynamodb", name="moto")  # type: ignore[untyped-decorator]
def dynamodb_moto() -> Service:
    return Service.for_provider(MotoDynamoDBProvider(), dispatch_table_factory=MotoFallbackDispatcher)
