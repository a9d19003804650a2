"""Routed workflows of the routing tests (not the research agent): a reviewer that loops on its
verdict, and a guessing loop with an event wait, a map and a sleep inside the cycle.

Every step counts its completed executions in ``RAN`` ((run id, node key) -> count) right before
it returns: a crash at any worker boundary comes before that (then the step had not completed)
or after the checkpoint (then it must never run again), so every count must be exactly 1.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepchain import END, Workflow, goto

RAN: Counter[tuple[str, str]] = Counter()


def ran(ctx: Any) -> None:
    RAN[(ctx.run_id, ctx.key)] += 1


review = Workflow("review-loop", max_iterations=10)


@review.step()
def brief(ctx: Any, topic: str) -> dict[str, Any]:
    ran(ctx)
    return {"topic": topic, "round": 0, "drafts": []}


@review.step(timeout_s=60)
def write(ctx: Any, s: dict[str, Any]) -> dict[str, Any]:
    # step-local progress inside the loop body: each item and the effect are checkpointed per iteration
    parts = ctx.each([1, 2], lambda p: f"{s['topic']}-r{s['round']}-p{p}")
    stamp = ctx.once("notify", lambda: f"sent-{s['round']}")
    ran(ctx)
    return {**s, "drafts": [*s["drafts"], "+".join(parts)], "stamp": stamp}


@review.step(routes=("write", "publish", END))
def judge(ctx: Any, s: dict[str, Any]) -> Any:
    ran(ctx)
    if s["topic"] == "reject":
        return goto(END, {"rejected": True, "rounds": s["round"]})
    if s["round"] >= s.get("target", 2):
        return goto("publish", s)
    return goto("write", {**s, "round": s["round"] + 1})


@review.step()
def publish(ctx: Any, s: dict[str, Any]) -> dict[str, Any]:
    ran(ctx)
    return {"published": s["drafts"][-1], "rounds": s["round"]}


SECRET = 3
guess = Workflow("guess-loop", max_iterations=6)


@guess.step()
def open_game(ctx: Any, player: str) -> dict[str, Any]:
    ran(ctx)
    return {"player": player}


guess.wait_for_event("guess", timeout_s=3600)  # node "guess": its output is the event's payload


@guess.step(routes=("guess", "spread"))
def check(ctx: Any, ev: dict[str, Any]) -> Any:
    ran(ctx)
    if ev["n"] != SECRET:
        return goto("guess", ev)  # back to the wait: the next iteration waits for the next guess
    return goto("spread", list(range(ev["n"])))


@guess.map(max_concurrency=2)
def spread(ctx: Any, n: int) -> int:
    ran(ctx)
    return n * 2


guess.sleep(5, name="pause")


@guess.step()
def score(ctx: Any, doubled: list[int]) -> dict[str, Any]:
    ran(ctx)
    return {"sum": sum(doubled)}
