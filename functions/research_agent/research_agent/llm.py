"""The LLM interface and its two implementations: Amazon Bedrock (Converse API) and an offline,
deterministic model built on the extractive algorithms of this package."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

from research_agent.offline_writer import compose_draft, compose_summary
from research_agent.prompts import parse_draft_prompt, parse_summarize_prompt

# USD per million tokens (input, output), Bedrock on-demand list prices for us-east-1 in 2025.
# Cross-region inference profile ids ("us.anthropic...") are priced as their base model.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "amazon.nova-micro-v1:0": (0.035, 0.14),
    "amazon.nova-lite-v1:0": (0.06, 0.24),
    "amazon.nova-pro-v1:0": (0.80, 3.20),
    "anthropic.claude-3-haiku-20240307-v1:0": (0.25, 1.25),
    "anthropic.claude-3-5-haiku-20241022-v1:0": (0.80, 4.00),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (3.00, 15.00),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": (3.00, 15.00),
    "anthropic.claude-3-7-sonnet-20250219-v1:0": (3.00, 15.00),
    "anthropic.claude-sonnet-4-20250514-v1:0": (3.00, 15.00),
    "meta.llama3-1-8b-instruct-v1:0": (0.22, 0.22),
    "meta.llama3-1-70b-instruct-v1:0": (0.72, 0.72),
}
# Unknown models are charged like a large model, so a budget never under-counts.
FALLBACK_PRICE_PER_MTOK: tuple[float, float] = (3.00, 15.00)
_REGION_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.", "jp.", "au.", "ca.")
CHARS_PER_TOKEN = 4
OFFLINE_MODEL = "offline-extractive-v1"
_RETRYABLE_CODES = frozenset(
    {"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
     "ModelNotReadyException", "ModelTimeoutException", "ServiceQuotaExceededException"}
)  # fmt: skip


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Completion:
        return cls(
            text=str(data["text"]),
            input_tokens=int(data["input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            model=str(data["model"]),
            cost_usd=float(data["cost_usd"]),
        )


class LLM(Protocol):
    def complete(self, *, system: str, prompt: str, max_tokens: int, purpose: str) -> Completion: ...


class LLMError(Exception):
    """A model call failed. ``retryable`` is True for throttling and transient service errors."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def price_for(model_id: str) -> tuple[float, float]:
    """(input, output) USD per million tokens for ``model_id``."""
    base = model_id
    for prefix in _REGION_PREFIXES:
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    return PRICES_PER_MTOK.get(base, FALLBACK_PRICE_PER_MTOK)


def cost_usd(model_id: str, input_tokens: int, output_tokens: int) -> float:
    price_in, price_out = price_for(model_id)
    return round((input_tokens * price_in + output_tokens * price_out) / 1_000_000, 8)


def estimate_tokens(text: str) -> int:
    """Token estimate for offline accounting: one token per 4 characters, rounded up (the usual rule
    of thumb for English with BPE tokenizers); 0 for empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _truncate(text: str, max_tokens: int) -> str:
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    cut = text[:limit]
    boundary = max(cut.rfind("\n"), cut.rfind(". "))
    return cut[: boundary + 1].rstrip() if boundary > 0 else cut


class OfflineLLM:
    """Deterministic stand-in for a hosted model.

    ``purpose="summarize"``: personalised TextRank over the prompt's ``<document>``.
    ``purpose="draft"``: a report body composed from the prompt's ``<research_input>`` JSON.
    Anything else: a TextRank digest of the prompt. Tokens are estimated with
    :func:`estimate_tokens` and priced as ``priced_as`` so budgets see realistic, non-zero costs.
    """

    def __init__(self, *, priced_as: str = "amazon.nova-lite-v1:0", model: str = OFFLINE_MODEL) -> None:
        self.priced_as = priced_as
        self.model = model

    def complete(self, *, system: str, prompt: str, max_tokens: int, purpose: str) -> Completion:
        if max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        if purpose == "summarize":
            document, question, max_sentences = parse_summarize_prompt(prompt)
            text = compose_summary(document, question=question, max_sentences=max_sentences)
        elif purpose == "draft":
            text = compose_draft(parse_draft_prompt(prompt))
        else:
            text = compose_summary(prompt, question="", max_sentences=3)
        text = _truncate(text, max_tokens)
        input_tokens = estimate_tokens(system) + estimate_tokens(prompt)
        output_tokens = estimate_tokens(text)
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=self.model,
            cost_usd=cost_usd(self.priced_as, input_tokens, output_tokens),
        )


class ConverseClient(Protocol):
    """The slice of a boto3 ``bedrock-runtime`` client that we use."""

    def converse(self, **kwargs: Any) -> Mapping[str, Any]: ...


class BedrockLLM:
    """Amazon Bedrock via the Converse API. The boto3 client is created on first use if not given."""

    def __init__(
        self,
        client: ConverseClient | None = None,
        *,
        model_id: str,
        region_name: str | None = None,
        temperature: float = 0.2,
    ) -> None:
        self._client = client
        self.model_id = model_id
        self.region_name = region_name
        self.temperature = temperature

    @property
    def client(self) -> ConverseClient:
        if self._client is None:
            import boto3

            self._client = cast(ConverseClient, boto3.client("bedrock-runtime", region_name=self.region_name))
        return self._client

    def complete(self, *, system: str, prompt: str, max_tokens: int, purpose: str) -> Completion:
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": max_tokens, "temperature": self.temperature},
        }
        if system:
            request["system"] = [{"text": system}]
        try:
            response = self.client.converse(**request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise LLMError(f"bedrock {purpose}: {exc}", code=code, retryable=code in _RETRYABLE_CODES) from exc
        except BotoCoreError as exc:
            raise LLMError(f"bedrock {purpose}: {exc}", code=type(exc).__name__, retryable=True) from exc
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(str(b["text"]) for b in blocks if isinstance(b, Mapping) and "text" in b)
        usage = response.get("usage", {})
        input_tokens = int(usage.get("inputTokens", 0))
        output_tokens = int(usage.get("outputTokens", 0))
        return Completion(
            text=text.strip(),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=self.model_id,
            cost_usd=cost_usd(self.model_id, input_tokens, output_tokens),
        )


def make_llm(env: Mapping[str, str] | None = None) -> LLM:
    """``STEPCHAIN_LLM=bedrock`` with ``STEPCHAIN_BEDROCK_MODEL_ID`` -> :class:`BedrockLLM` (region from
    ``STEPCHAIN_BEDROCK_REGION`` or ``AWS_REGION``); otherwise :class:`OfflineLLM`.

    Asking for Bedrock without a model id is a configuration error, not a silent fallback.
    """
    env = os.environ if env is None else env
    kind = env.get("STEPCHAIN_LLM", "offline").strip().lower() or "offline"
    if kind == "bedrock":
        model_id = env.get("STEPCHAIN_BEDROCK_MODEL_ID", "").strip()
        if not model_id:
            raise ValueError("STEPCHAIN_LLM=bedrock requires STEPCHAIN_BEDROCK_MODEL_ID")
        region = env.get("STEPCHAIN_BEDROCK_REGION") or env.get("AWS_REGION") or None
        return BedrockLLM(model_id=model_id, region_name=region)
    if kind != "offline":
        raise ValueError(f"unknown STEPCHAIN_LLM={kind!r} (expected 'offline' or 'bedrock')")
    return OfflineLLM()
