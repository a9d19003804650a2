"""The price table of AWS requests (stepchain.observe.pricing): arithmetic, regions, user overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepchain.observe.pricing import ENV_VAR, PRICES_VERSION, load_prices

#: one step on each transport, per million steps (2 DynamoDB writes + 1 read, 1 KB items)
SQS_STEP = {"ddb_write": 2, "ddb_wru": 2, "ddb_read": 1, "ddb_rru": 1, "sqs_send": 1, "sqs_receive": 1}
SQS_STEP |= {"sqs_delete": 1, "lambda_invoke": 1}
SFN_STEP = {"ddb_write": 2, "ddb_wru": 2, "ddb_read": 1, "ddb_rru": 1, "sfn_transition": 1, "lambda_invoke": 1}


def per_million(counts: dict[str, int], **kw: object) -> dict[str, float]:
    prices = load_prices(**kw)  # type: ignore[arg-type]
    return {k: v * 1e6 for k, v in prices.cost(counts).items()}


def test_us_east_1_arithmetic_per_million_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    sqs = per_million(SQS_STEP, region="us-east-1")
    assert sqs["dynamodb"] == pytest.approx(2 * 0.625 + 0.125)  # WRU $0.625/M, RRU $0.125/M
    assert sqs["sqs"] == pytest.approx(3 * 0.40)
    assert sqs["lambda"] == pytest.approx(0.20)
    assert sum(sqs.values()) == pytest.approx(2.775)  # the issue's $2.78 per million steps
    sfn = per_million(SFN_STEP, region="us-east-1")
    assert sfn["stepfunctions"] == pytest.approx(25.0)
    s3 = per_million({"s3_put": 1, "s3_get": 1}, region="us-east-1")
    assert s3["s3"] == pytest.approx(5.0 + 0.4)
    assert per_million({"ddb_read": 5, "ddb_write": 5, "sfn_request": 3}, region="us-east-1") == {
        "dynamodb": 0.0,
        "stepfunctions": 0.0,
    }  # billed by units and transitions, not per request


def test_regions_differ_and_unknown_regions_fall_back_to_us_east_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    eu = load_prices("eu-central-1")
    assert eu.usd["ddb_wru"] > load_prices("us-east-1").usd["ddb_wru"]
    assert eu.version == PRICES_VERSION and eu.region == "eu-central-1"
    other = load_prices("ap-south-2")
    assert other.usd == load_prices("us-east-1").usd and "priced as us-east-1" in other.version
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert load_prices().region == "eu-west-1"


def test_a_user_overrides_prices_by_file_in_the_environment_or_by_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"version": "negotiated-2026", "regions": {"us-east-1": {"sfn_transition": 1e-5}}}))
    monkeypatch.setenv(ENV_VAR, str(path))
    p = load_prices("us-east-1")
    assert p.version == "negotiated-2026" and p.usd["sfn_transition"] == 1e-5
    assert p.usd["ddb_wru"] == pytest.approx(0.625e-6)  # counters not overridden keep the built-in price
    assert per_million(SFN_STEP, region="us-east-1")["stepfunctions"] == pytest.approx(10.0)
    assert load_prices("eu-west-1").version == PRICES_VERSION  # the file names no eu-west-1 prices
    arg = load_prices("eu-west-1", table={"regions": {"*": {"ddb_wru": 0.0}}})  # the argument wins over the file
    assert arg.usd["ddb_wru"] == 0.0 and arg.version == "user override"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_prices("us-east-1")
