"""The Lambda context an in-process call of the API handler gets in tests (what Powertools reads)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ApiLambdaContext:
    function_name: str = "ApiFunction"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    aws_request_id: str = "lambda-req-0001"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000
