"""The library's logger and the part of the Lambda context object stepchain uses."""

from __future__ import annotations

import os
from typing import Protocol

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "stepchain"))


class LambdaContextLike(Protocol):
    """The part of the Lambda context object stepchain uses."""

    @property
    def aws_request_id(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


__all__ = ["LambdaContextLike", "logger"]
