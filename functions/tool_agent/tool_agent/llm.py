"""The agent's model, offline: a deterministic rule-based planner behind an async client.

``parse_task`` reads the question (regular expressions) into what has to be found and computed;
``decide`` looks at the agent's state and picks the next move: a tool call (``search``,
``calculator``), a risky tool that needs a human's approval (``send_email``), or the answer.
:class:`OfflineToolLLM` serves it the way a hosted model's SDK would (``await client.complete(...)``),
with latency and a simulated rate limit (a 429 with Retry-After, once per request id).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

#: "how many trips per station did ... record in 2025"
_PER = re.compile(r"\bhow many (\w+) per (\w+)\b.*?\bin (\d{4})\b", re.IGNORECASE)
#: "by what percent did trips per station grow from 2024 to 2025"
_GROWTH_PER = re.compile(
    r"\bby what percent(?:age)? did (\w+) per (\w+) (?:grow|rise|increase|change) from (\d{4}) to (\d{4})",
    re.IGNORECASE,
)
#: "by what percent did (bike share) trips grow from 2024 to 2025"
_GROWTH = re.compile(
    r"\bby what percent(?:age)? did (?:[\w-]+ )*?(\w+) (?:grow|rise|increase|change) from (\d{4}) to (\d{4})",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"\be-?mail (?:the answer|the result|it|this) to ([\w.+-]+@[\w-]+(?:\.[\w-]+)+)", re.IGNORECASE)
_SLOT = re.compile(r"\[(\w+)@(\d{4})\]")

#: what the offline model's tokens are priced as (per million), so the ledger shows a realistic cost
PRICE_IN_PER_M = 0.80
PRICE_OUT_PER_M = 4.00


class UnsupportedQuestion(ValueError):
    """The offline model understands a few question shapes only (see ``parse_task``)."""


def _plural(word: str) -> str:
    word = word.lower()
    return word if word.endswith("s") else word + "s"


def parse_task(question: str) -> dict[str, Any]:
    """What the question needs: facts ``[metric, year]``, a formula over them, an e-mail recipient."""
    email = _EMAIL.search(question)
    if m := _GROWTH_PER.search(question):
        a, b, y1, y2 = _plural(m[1]), _plural(m[2]), int(m[3]), int(m[4])
        needs = [[a, y1], [b, y1], [a, y2], [b, y2]]
        formula = f"([{a}@{y2}] / [{b}@{y2}] - [{a}@{y1}] / [{b}@{y1}]) / ([{a}@{y1}] / [{b}@{y1}]) * 100"
        what, unit = f"the growth of {a} per {b[:-1]} from {y1} to {y2}", "%"
    elif m := _PER.search(question):
        a, b, year = _plural(m[1]), _plural(m[2]), int(m[3])
        needs = [[a, year], [b, year]]
        formula, what, unit = f"[{a}@{year}] / [{b}@{year}]", f"{a} per {b[:-1]} in {year}", ""
    elif m := _GROWTH.search(question):
        a, y1, y2 = _plural(m[1]), int(m[2]), int(m[3])
        needs = [[a, y1], [a, y2]]
        formula, what, unit = (
            f"([{a}@{y2}] - [{a}@{y1}]) / [{a}@{y1}] * 100",
            f"the growth of {a} from {y1} to {y2}",
            "%",
        )
    else:
        raise UnsupportedQuestion(
            "ask 'how many <things> per <thing> ... in <year>' or 'by what percent did <things> grow from <year> to "
            "<year>' (optionally: 'email the answer to <address>')"
        )
    return {
        "question": question,
        "needs": needs,
        "formula": formula,
        "what": what,
        "unit": unit,
        "email": email[1] if email else None,
    }


def fact_key(metric: str, year: int) -> str:
    return f"{metric}@{year}"


def expression(formula: str, facts: dict[str, Any]) -> str:
    """The formula with every ``[metric@year]`` replaced by that fact's value."""
    return _SLOT.sub(lambda m: repr(facts[fact_key(m[1], int(m[2]))]["value"]), formula)


def decide(state: dict[str, Any]) -> dict[str, Any]:
    """The next move for ``state`` (``task``, ``facts``, ``result``, ``emailed``)."""
    task, facts = state["task"], state["facts"]
    for metric, year in task["needs"]:
        key = fact_key(metric, year)
        if key not in facts:
            return {
                "action": "tool",
                "tool": "search",
                "args": {"query": f"{metric} {year}", "metric": metric, "year": year},
                "thought": f"I need the number of {metric} in {year}: search the documents.",
            }
        if facts[key] is None:
            return {"action": "answer", "answer": f"I could not find the number of {metric} in {year}."}
    if state.get("result") is None:
        return {
            "action": "tool",
            "tool": "calculator",
            "args": {"expression": expression(task["formula"], facts)},
            "thought": f"I have every number I need: compute {task['what']}.",
        }
    answer = f"{task['what'][0].upper()}{task['what'][1:]}: {state['result']:.2f}{task['unit']}."
    sources = sorted({f["source"] for f in facts.values() if f})
    answer += f" (sources: {', '.join(sources)})"
    if task["email"] and state.get("emailed") is None:
        return {
            "action": "approval",
            "tool": "send_email",
            "args": {"to": task["email"], "subject": task["question"][:80], "body": answer},
            "thought": f"Sending e-mail is a risky action: ask a human before mailing {task['email']}.",
        }
    if state.get("emailed"):
        answer += f" E-mail to {task['email']}: {state['emailed']['status']}."
    return {"action": "answer", "answer": answer}


class RateLimited(Exception):
    """What a hosted model's SDK raises on HTTP 429; ``retry_after_s`` is its Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"429 Too Many Requests (retry after {retry_after_s:g} s)")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Completion:
    decision: dict[str, Any]
    input_tokens: int
    output_tokens: int

    @property
    def usd(self) -> float:
        return (self.input_tokens * PRICE_IN_PER_M + self.output_tokens * PRICE_OUT_PER_M) / 1e6


@dataclass
class OfflineToolLLM:
    """An async client of the offline model.

    ``latency_ms``: how long a completion takes (``await asyncio.sleep``). ``rate_limit_iteration``:
    the first request of that loop iteration is answered with :class:`RateLimited` once per request
    id (``None``: never), ``retry_after_s`` later it goes through.
    """

    latency_ms: int = 0
    rate_limit_iteration: int | None = 1
    retry_after_s: float = 2.0
    calls: int = 0
    _limited: set[str] = field(default_factory=set)

    async def complete(self, state: dict[str, Any], *, request_id: str, iteration: int) -> Completion:
        self.calls += 1
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if iteration == self.rate_limit_iteration and request_id not in self._limited:
            self._limited.add(request_id)
            raise RateLimited(self.retry_after_s)
        decision = decide(state)
        prompt = json.dumps(state, sort_keys=True)
        return Completion(decision, input_tokens=len(prompt) // 4 + 200, output_tokens=len(json.dumps(decision)) // 4)
