"""e2e tier: deployed on a Docker-free LocalStack that the session starts and stops by PID."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from tests.e2e.localstack_fixture import aws_client, make_localstack_fixture

# LocalStack's SQS event source mappings back off up to 10 s between empty polls: with the SQS transport every
# step hop could wait that long. 1 s keeps the e2e tier fast (the LocalStack the fixture starts inherits this).
os.environ.setdefault("LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC", "1")

localstack_endpoint = make_localstack_fixture()


@pytest.fixture(scope="session")
def aws(localstack_endpoint: str) -> Callable[[str], Any]:
    """``aws("dynamodb")`` -> a boto3 client bound to the session's LocalStack."""
    return lambda service: aws_client(service, localstack_endpoint)
