"""e2e tier: deployed on a Docker-free LocalStack that the session starts and stops by PID."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.e2e.localstack_fixture import aws_client, make_localstack_fixture

localstack_endpoint = make_localstack_fixture()


@pytest.fixture(scope="session")
def aws(localstack_endpoint: str) -> Callable[[str], Any]:
    """``aws("dynamodb")`` -> a boto3 client bound to the session's LocalStack."""
    return lambda service: aws_client(service, localstack_endpoint)
