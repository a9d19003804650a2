"""Prices of the AWS requests a run makes (:mod:`stepchain.requests`): a versioned, region-aware table.

Prices are on-demand list prices in USD, per request or per request unit, without free tiers or
volume discounts, from the public pricing pages (retrieved for :data:`PRICES_VERSION`):

* DynamoDB on-demand (aws.amazon.com/dynamodb/pricing/on-demand/, after the November 2024 cut):
  $0.625 per million write request units, $0.125 per million read request units (us-east-1).
* S3 Standard (aws.amazon.com/s3/pricing/): PUT $0.005 per 1,000, GET $0.0004 per 1,000.
* SQS standard queues (aws.amazon.com/sqs/pricing/): $0.40 per million requests (64 KB chunks).
* Step Functions Standard (aws.amazon.com/step-functions/pricing/): $0.025 per 1,000 state
  transitions; its API calls (StartExecution, SendTaskSuccess) are not billed.
* Lambda (aws.amazon.com/lambda/pricing/): $0.20 per million requests (compute: ``stepchain.observe.ledger``).

Other regions differ mostly in DynamoDB and S3; the table holds the regions below and falls back
to us-east-1 for any other (``Prices.version`` says so). Override it with the
``STEPCHAIN_PRICES`` environment variable (a JSON file) or the ``table=`` argument of
:func:`load_prices`: ``{"version": "...", "regions": {"us-east-1": {"ddb_wru": 6.25e-07, ...}}}``;
a region's entries replace the built-in ones counter by counter (missing counters keep theirs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES_VERSION = "2025-06 (aws.amazon.com/<service>/pricing, on-demand list prices)"
DEFAULT_REGION = "us-east-1"
ENV_VAR = "STEPCHAIN_PRICES"

M = 1e-6  # per million

_US_EAST_1: dict[str, float] = {
    "ddb_wru": 0.625 * M,
    "ddb_rru": 0.125 * M,
    "ddb_read": 0.0,  # billed by units (ddb_rru), not per request
    "ddb_write": 0.0,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "sqs_send": 0.40 * M,
    "sqs_receive": 0.40 * M,
    "sqs_delete": 0.40 * M,
    "sqs_other": 0.40 * M,
    "sfn_transition": 25.0 * M,
    "sfn_request": 0.0,
    "lambda_invoke": 0.20 * M,
}

#: built-in table: region -> counter -> USD
BUILT_IN: dict[str, dict[str, float]] = {
    "us-east-1": _US_EAST_1,
    "us-east-2": _US_EAST_1,
    "us-west-2": _US_EAST_1,
    "eu-west-1": {**_US_EAST_1, "ddb_wru": 0.7063 * M, "ddb_rru": 0.1413 * M},
    "eu-central-1": {
        **_US_EAST_1,
        "ddb_wru": 0.7625 * M,
        "ddb_rru": 0.1525 * M,
        "s3_put": 0.0054 / 1000,
        "s3_get": 0.00043 / 1000,
    },
}

#: which service each counter belongs to (the ledger's breakdown)
SERVICE = {
    "ddb": "dynamodb",
    "s3": "s3",
    "sqs": "sqs",
    "sfn": "stepfunctions",
    "lambda": "lambda",
}


@dataclass(frozen=True)
class Prices:
    version: str
    region: str
    usd: Mapping[str, float]  # counter -> USD per request / unit

    def cost(self, counts: Mapping[str, int]) -> dict[str, float]:
        """USD by service (``dynamodb``, ``s3``, ``sqs``, ``stepfunctions``, ``lambda``) for ``counts``."""
        out: dict[str, float] = {}
        for name, n in counts.items():
            service = SERVICE.get(name.split("_", 1)[0], "other")
            out[service] = out.get(service, 0.0) + n * self.usd.get(name, 0.0)
        return {k: round(v, 12) for k, v in out.items()}


def _read_override(table: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | None:
    if table is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            return None
        table = Path(path)
    if isinstance(table, str | Path):
        loaded = json.loads(Path(table).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{table}: a price table is a JSON object")
        return loaded
    return table


def load_prices(region: str | None = None, table: Mapping[str, Any] | str | Path | None = None) -> Prices:
    """The prices of ``region`` (default: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, us-east-1): the
    built-in table, overridden by ``table`` (a dict or a JSON file) or else by ``$STEPCHAIN_PRICES``."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    known = region if region in BUILT_IN else DEFAULT_REGION
    usd = dict(BUILT_IN[known])
    version = PRICES_VERSION if known == region else f"{PRICES_VERSION}; {region} priced as {DEFAULT_REGION}"
    override = _read_override(table)
    if override is not None:
        regions = override.get("regions", {})
        entries = regions.get(region) or regions.get("*") or {}
        for name, value in entries.items():
            usd[str(name)] = float(value)
        if entries:
            version = str(override.get("version", "user override"))
    return Prices(version, region, usd)


__all__ = ["BUILT_IN", "ENV_VAR", "PRICES_VERSION", "Prices", "load_prices"]
