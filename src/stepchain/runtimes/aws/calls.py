"""Optional log of the AWS operations a deployed function makes (``STEPCHAIN_RECORD_CALLS=1``).

For checking least privilege on a deployment: with the variable set, every botocore API call and every
presigned URL the function's code makes is logged as one line ``{"message": "aws call", "aws_call":
"<iam prefix>:<Operation>", "presign": ..., "parts": [...]}`` (``parts``: a transaction's item kinds)
through the Powertools logger, so it lands in the function's log group. tests/e2e reads these lines after
a LocalStack run and checks each against the function's role in the template. Off by default: it costs a
log line per call.

The handler goes into ``botocore.handlers.BUILTIN_HANDLERS`` (so every botocore session created later has it:
the framework's lazily created clients, the SigV4 presigning twin, the Secrets Manager client) and onto
boto3's default session if one exists already. ``provide-client-params`` is emitted for API calls and for
presigned URLs alike, before parameter validation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stepchain.logs import logger

ENV = "STEPCHAIN_RECORD_CALLS"
EVENT = "provide-client-params"


def log_call(params: Any, model: Any, context: Mapping[str, Any] | None = None, **_: Any) -> None:
    """botocore handler: log the operation as ``<signing name>:<Operation>`` (the IAM prefix)."""
    extra: dict[str, Any] = {"aws_call": f"{model.service_model.signing_name}:{model.name}"}
    extra["presign"] = bool((context or {}).get("is_presign_request"))
    if isinstance(params, Mapping) and params.get("TransactItems"):  # authorized per item kind (Put, Update...)
        extra["parts"] = sorted({kind for item in params["TransactItems"] for kind in item})
    logger.info("aws call", extra=extra)


def install_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Log every AWS call from now on when ``STEPCHAIN_RECORD_CALLS=1``; True if installed (idempotent)."""
    if (os.environ if env is None else env).get(ENV) != "1":
        return False
    import boto3
    from botocore.handlers import BUILTIN_HANDLERS

    entry = (EVENT, log_call)
    if entry not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(entry)
        if boto3.DEFAULT_SESSION is not None:
            boto3.DEFAULT_SESSION.events.register(EVENT, log_call)
    return True


__all__ = ["ENV", "install_from_env", "log_call"]
