"""The README's quickstart, runnable: a three-step agent that survives a crash, tested in-process.

.venv/bin/python examples/quickstart.py
"""

import time

from stepchain import RetryPolicy, StepContext, Workflow
from stepchain.testing import Harness

wf = Workflow("quickstart")


@wf.step(retry=RetryPolicy(max_attempts=3, backoff_s=2.0), timeout_s=60)
def plan(ctx: StepContext, request: dict) -> list[str]:
    return [f"{request['topic']} part {i}" for i in range(1, 7)]


@wf.step(timeout_s=10)
def research(ctx: StepContext, parts: list[str]) -> list[dict]:
    def study(part: str) -> dict:
        time.sleep(3)  # an LLM call that takes 3 s: 6 parts do not fit in one 10 s invocation
        ctx.record_cost(usd=0.002, input_tokens=900, output_tokens=150)
        return {"part": part, "notes": part.upper()}

    return ctx.each(parts, study)  # checkpointed per part; continues in a fresh invocation when time runs low


wf.wait_for_event("approval", timeout_s=86_400)


@wf.step()
def publish(ctx: StepContext, approval: dict) -> str:
    notes = ctx.output_of("research")
    # a side effect that must happen once, even if this invocation dies right after it
    return ctx.once("post", lambda: f"published {len(notes)} notes, approved by {approval['by']}")


if __name__ == "__main__":
    with Harness(wf) as h:  # in memory (backend="moto": DynamoDB and S3 on moto), virtual time (time.sleep skips)
        h.crash_at("mid_item", node="research", skip=2)  # kill the worker in the middle of 'research'
        run_id = h.start("quickstart", {"topic": "grid batteries"})
        h.run()  # runs until the run waits for its approval
        h.send_event(run_id, "approval", {"by": "ana"})
        h.run()
        print(h.output(run_id))  # published 6 notes, approved by ana
        print(dict(h.executions))  # every step executed exactly once
        view = h.view(run_id)
        print(view.totals["invocations"], "invocations,", view.restart_tax_avoided)
