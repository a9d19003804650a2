"""The tool agent's pieces without a workflow: the calculator (no eval), the corpus search, the planner."""

from __future__ import annotations

import asyncio

import pytest

from tool_agent.calculator import CalculatorError, calculate
from tool_agent.corpus import document, find_quantity, rank
from tool_agent.llm import OfflineToolLLM, RateLimited, UnsupportedQuestion, decide, expression, parse_task


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("2 + 3 * 4", 14.0),
        ("(2 + 3) * 4", 20.0),
        ("-2 ** 2", -4.0),
        ("7 // 2 + 7 % 2", 4.0),
        ("1284000.0 / 312.0", 1284000 / 312),
    ],
)
def test_the_calculator_does_arithmetic(expr: str, value: float) -> None:
    assert calculate(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "abs(-1)",
        "x + 1",
        "(1).real",
        "[1, 2]",
        "1 if 1 else 2",
        "2 ** 1000",
        "1 / 0",
        "'a' * 3",
        "True + 1",
        "1 +",
        "9" * 201,
    ],
)
def test_the_calculator_refuses_anything_but_arithmetic_on_numbers(expr: str) -> None:
    with pytest.raises(CalculatorError):
        calculate(expr)


def test_search_ranks_the_documents_that_state_a_quantity_and_extraction_finds_it_by_year() -> None:
    assert rank("stations 2025")[:2] == ["bikeshare-report.txt", "network-expansion.txt"]
    assert find_quantity(document("network-expansion.txt").text, "stations", 2025) == 312.0
    budget = document("city-budget.txt").text
    # two amounts in one sentence: each belongs to its own year
    assert find_quantity(budget, "euros", 2025) == 4_620_000.0
    assert find_quantity(budget, "euros", 2024) == 4_100_000.0
    assert find_quantity(budget, "euros", 2023) is None


def test_the_planner_searches_what_it_lacks_then_computes_then_asks_before_mailing() -> None:
    task = parse_task("How many trips per station did the bike share record in 2025? Email the answer to a@b.example")
    assert task["needs"] == [["trips", 2025], ["stations", 2025]] and task["email"] == "a@b.example"
    state = {"task": task, "facts": {}, "result": None, "emailed": None}
    assert decide(state)["args"]["query"] == "trips 2025"
    state["facts"] = {
        "trips@2025": {"value": 1284000.0, "source": "x"},
        "stations@2025": {"value": 312.0, "source": "y"},
    }
    assert expression(task["formula"], state["facts"]) == "1284000.0 / 312.0"
    assert decide(state)["tool"] == "calculator"
    state["result"] = 4115.3846
    ask = decide(state)
    assert ask["action"] == "approval" and ask["args"]["to"] == "a@b.example"
    state["emailed"] = {"status": "sent"}
    assert decide(state)["answer"] == "Trips per station in 2025: 4115.38. (sources: x, y) E-mail to a@b.example: sent."
    with pytest.raises(UnsupportedQuestion):
        parse_task("Tell me a joke about bicycles")


def test_the_client_is_rate_limited_once_per_request_id_in_its_iteration() -> None:
    llm = OfflineToolLLM(rate_limit_iteration=1, retry_after_s=3)
    task = parse_task("By what percent did trips grow from 2024 to 2025?")
    state = {"task": task, "facts": {}, "result": None, "emailed": None}

    async def calls() -> list[str]:
        out = []
        for rid, it in (("r:think", 0), ("r:think~00001", 1), ("r:think~00001", 1), ("s:think~00001", 1)):
            try:
                out.append((await llm.complete(state, request_id=rid, iteration=it)).decision["action"])
            except RateLimited as exc:
                out.append(f"429 after {exc.retry_after_s:g}")
        return out

    assert asyncio.run(calls()) == ["tool", "429 after 3", "tool", "429 after 3"]
