"""The parallel node kind: one child run per branch, all started at once, joined into a dict.

``wf.parallel({"facts": facts_wf, "quotes": "quotes"}, name="gather", on_error="fail")``: every
branch is its own child run of its workflow, on the node's input (one per branch, whatever the
crashes and duplicates: see :mod:`~stepchain.engine.nodes.children`). The output is
``{branch: output}``. ``on_error="fail"``: the first branch found failed (or cancelled) fails the
node and the run, and the branches still active are cancelled; ``"collect"``: every branch is
waited for and a failed one's value is ``{"error": {"run_id", "status", "type", "message"}}``.
"""

from __future__ import annotations

from typing import Any

from stepchain.define.workflow import Node
from stepchain.engine.nodes import children
from stepchain.engine.nodes.scope import KindServices
from stepchain.store.records import RunRecord, RunStatus


def judge(w: KindServices, node: Node, key: str, kids: dict[str, RunRecord]) -> children.Verdict:
    if node.on_error == "fail":
        for branch, child in kids.items():
            if child.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                return "fail", children.child_error(key, branch, child)
    if not all(c.status.finished for c in kids.values()):
        return None
    out: dict[str, Any] = {}
    for branch, child in kids.items():
        if child.status is RunStatus.SUCCEEDED:
            out[branch] = w.codec.decode(child.output_ref) if child.output_ref is not None else None
        else:  # collect
            err = child.error or {}
            out[branch] = {
                "error": {
                    "run_id": child.run_id,
                    "status": child.status.value,
                    "type": err.get("type", "ChildRunCancelled"),
                    "message": err.get("message", "the child run was cancelled"),
                }
            }
    first = next(iter(kids.values())).parent or key  # <parent run id>/<node key>/<branch>
    return "ok", w.codec.encode(out, scope=first.rsplit("/", 1)[0])


#: the call/parallel handler with this kind's verdict on its children
HANDLER = children.ChildrenHandler(judge, reads_child_outputs=True)
