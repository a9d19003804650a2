"""The workflow of test_stream.py (module level, so every harness's worker can import it)."""

from __future__ import annotations

from typing import Any

from stepchain import Workflow

wf = Workflow("streamer", stream_lifecycle=True)

TOKENS = ["he", "llo", " wor", "ld"]


@wf.step()
def plan(ctx: Any, n: int) -> list[int]:
    ctx.emit("status", {"phase": "planning"})
    text = ctx.emit_stream(iter(TOKENS), every=4)
    ctx.emit("status", {"phase": "planned", "text": text})
    return list(range(n))


@wf.map()
def work(ctx: Any, i: int) -> int:
    def item(j: int) -> int:
        ctx.emit("item", {"i": i, "j": j})
        ctx.emit("item-done", {"i": i, "j": j})
        return j

    ctx.each([0, 1], item)
    charged = ctx.once("charge", lambda: ctx.emit("charging", {"i": i}) or i)
    ctx.emit("done", {"i": i, "charged": charged})
    return i


@wf.step()
async def total(ctx: Any, xs: list[int]) -> int:
    async def tokens() -> Any:
        for t in ("su", "m"):
            yield t

    said = await ctx.emit_stream(tokens(), kind="say", every=100)
    ctx.emit("total", {"sum": sum(xs), "said": said})
    return sum(xs)


def expected(n: int) -> dict[str, list[tuple[str, Any]]]:
    """The user events each node emits, in order (a clean run)."""
    out: dict[str, list[tuple[str, Any]]] = {
        "plan": [
            ("status", {"phase": "planning"}),
            ("tokens", {"text": "hello"}),
            ("tokens", {"text": " wor"}),
            ("tokens", {"text": "ld"}),
            ("status", {"phase": "planned", "text": "hello world"}),
        ],
        "total": [("say", {"text": "sum"}), ("total", {"sum": sum(range(n)), "said": "sum"})],
    }
    for i in range(n):
        evs: list[tuple[str, Any]] = []
        for j in (0, 1):
            evs += [("item", {"i": i, "j": j}), ("item-done", {"i": i, "j": j})]
        evs += [("charging", {"i": i}), ("done", {"i": i, "charged": i})]
        out[f"work#{i:05d}"] = evs
    return out
