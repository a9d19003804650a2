"""The LLM interface: offline model, Bedrock via botocore's Stubber, pricing and the factory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from research_agent.fetcher import CorpusFetcher
from research_agent.llm import (
    OFFLINE_MODEL,
    BedrockLLM,
    Completion,
    LLMError,
    OfflineLLM,
    cost_usd,
    estimate_tokens,
    make_llm,
    price_for,
)
from research_agent.prompts import SUMMARIZE_SYSTEM, build_summarize_prompt, parse_summarize_prompt
from research_agent.summarize import summarize

URL = "https://storage-science.example/field-data/efficiency-and-degradation"
QUESTION = "How efficient are grid batteries and how fast do they degrade?"


def _summarize_prompt(max_sentences: int = 3) -> tuple[str, str]:
    page = CorpusFetcher().fetch(URL)
    prompt = build_summarize_prompt(
        question=QUESTION, title=page.title, url=page.url, text=page.text, max_sentences=max_sentences
    )
    return prompt, page.text


def test_token_estimate_and_pricing() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert price_for("amazon.nova-lite-v1:0") == (0.06, 0.24)
    assert price_for("us.anthropic.claude-3-5-haiku-20241022-v1:0") == price_for(
        "anthropic.claude-3-5-haiku-20241022-v1:0"
    )
    assert price_for("some.unknown-model") == (3.0, 15.0)  # conservative fallback
    assert cost_usd("anthropic.claude-3-haiku-20240307-v1:0", 1_000_000, 1_000_000) == pytest.approx(1.5)


def test_prompt_round_trip() -> None:
    prompt, text = _summarize_prompt(4)
    document, question, max_sentences = parse_summarize_prompt(prompt)
    assert document == text
    assert question == QUESTION
    assert max_sentences == 4
    assert parse_summarize_prompt("free-form text") == ("free-form text", "", 5)


def test_offline_summarize_runs_textrank_on_the_document() -> None:
    prompt, text = _summarize_prompt(3)
    llm = OfflineLLM()
    first = llm.complete(system=SUMMARIZE_SYSTEM, prompt=prompt, max_tokens=400, purpose="summarize")
    assert first == llm.complete(system=SUMMARIZE_SYSTEM, prompt=prompt, max_tokens=400, purpose="summarize")
    extracted = summarize(text, 3, focus=QUESTION, numeric_weight=0.5, damping=0.7)
    assert first.text == " ".join(extracted)
    assert all(sentence in text for sentence in extracted)
    assert first.model == OFFLINE_MODEL
    assert first.input_tokens == estimate_tokens(SUMMARIZE_SYSTEM) + estimate_tokens(prompt)
    assert first.output_tokens == estimate_tokens(first.text)
    assert first.cost_usd == cost_usd("amazon.nova-lite-v1:0", first.input_tokens, first.output_tokens)
    assert 0 < first.cost_usd < 0.001


def test_offline_respects_max_tokens_and_other_purposes() -> None:
    prompt, _ = _summarize_prompt(8)
    short = OfflineLLM().complete(system="", prompt=prompt, max_tokens=20, purpose="summarize")
    assert short.output_tokens <= 20
    other = OfflineLLM().complete(system="", prompt=prompt, max_tokens=500, purpose="classify")
    assert other.text and other.output_tokens > 0
    with pytest.raises(ValueError):
        OfflineLLM().complete(system="", prompt=prompt, max_tokens=0, purpose="summarize")
    priced = OfflineLLM(priced_as="anthropic.claude-3-5-sonnet-20241022-v2:0")
    cheap = OfflineLLM()
    kwargs: dict[str, Any] = {"system": "", "prompt": prompt, "max_tokens": 300, "purpose": "summarize"}
    assert priced.complete(**kwargs).cost_usd > cheap.complete(**kwargs).cost_usd


def test_completion_round_trip() -> None:
    c = Completion(text="hi", input_tokens=3, output_tokens=1, model="m", cost_usd=0.5)
    assert Completion.from_dict(c.to_dict()) == c


# --- Bedrock through botocore's Stubber (no network) -----------------------------------------

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture()
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _response(text: str, inp: int, out: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out},
        "metrics": {"latencyMs": 420},
    }


def test_bedrock_converse_request_usage_and_cost(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expected = {
        "modelId": MODEL,
        "system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": "Summarize this."}]}],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2},
    }
    stubber.add_response("converse", _response("  A summary.  ", 1200, 150), expected)
    llm = BedrockLLM(client, model_id=MODEL)
    result = llm.complete(system="be brief", prompt="Summarize this.", max_tokens=256, purpose="summarize")
    assert (result.text, result.input_tokens, result.output_tokens, result.model) == (
        "A summary.",
        1200,
        150,
        MODEL,
    )
    assert result.cost_usd == pytest.approx((1200 * 0.80 + 150 * 4.00) / 1e6)


def test_bedrock_omits_empty_system_and_joins_text_blocks(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    response = _response("Part one. ", 10, 5)
    response["output"]["message"]["content"].append({"text": "Part two."})
    expected = {
        "modelId": MODEL,
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.0},
    }
    stubber.add_response("converse", response, expected)
    result = BedrockLLM(client, model_id=MODEL, temperature=0.0).complete(
        system="", prompt="hi", max_tokens=50, purpose="draft"
    )
    assert result.text == "Part one. Part two."


@pytest.mark.parametrize(("code", "retryable"), [("ThrottlingException", True), ("ValidationException", False)])
def test_bedrock_errors_become_llm_errors(stubbed: tuple[Any, Stubber], code: str, retryable: bool) -> None:
    client, stubber = stubbed
    stubber.add_client_error("converse", service_error_code=code, service_message="nope", http_status_code=400)
    with pytest.raises(LLMError) as info:
        BedrockLLM(client, model_id=MODEL).complete(system="", prompt="x", max_tokens=5, purpose="summarize")
    assert info.value.code == code
    assert info.value.retryable is retryable


def test_bedrock_client_is_created_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict[str, Any]] = []
    sentinel = object()

    def fake_client(service: str, **kwargs: Any) -> object:
        created.append({"service": service, **kwargs})
        return sentinel

    monkeypatch.setattr(boto3, "client", fake_client)
    llm = BedrockLLM(model_id=MODEL, region_name="eu-west-1")
    assert created == []
    assert llm.client is sentinel
    assert llm.client is sentinel
    assert created == [{"service": "bedrock-runtime", "region_name": "eu-west-1"}]


def test_make_llm_factory() -> None:
    assert isinstance(make_llm({}), OfflineLLM)
    assert isinstance(make_llm({"STEPCHAIN_LLM": "offline"}), OfflineLLM)
    llm = make_llm({"STEPCHAIN_LLM": "bedrock", "STEPCHAIN_BEDROCK_MODEL_ID": MODEL, "AWS_REGION": "us-west-2"})
    assert isinstance(llm, BedrockLLM)
    assert (llm.model_id, llm.region_name) == (MODEL, "us-west-2")
    with pytest.raises(ValueError, match="STEPCHAIN_BEDROCK_MODEL_ID"):
        make_llm({"STEPCHAIN_LLM": "bedrock"})
    with pytest.raises(ValueError, match="unknown"):
        make_llm({"STEPCHAIN_LLM": "gpt"})
