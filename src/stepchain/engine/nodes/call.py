"""The call node kind: run another registered workflow as a child run on the node's input.

``wf.call("summarize", name="delegate")``: the node starts the child (one, whatever the crashes
and duplicates: see :mod:`~stepchain.engine.nodes.children`) and waits without holding a worker;
the child's end resumes it: its output is the child's output; a child that failed or was
cancelled fails the node (terminal, like a step raising ``TerminalError``) and so the run.
"""

from __future__ import annotations

from stepchain.define.workflow import Node
from stepchain.engine.nodes import children
from stepchain.engine.nodes.scope import KindServices
from stepchain.store.records import RunRecord, RunStatus


def judge(w: KindServices, node: Node, key: str, kids: dict[str, RunRecord]) -> children.Verdict:
    """The child's output once it succeeded; its error once it failed or was cancelled."""
    ((branch, child),) = kids.items()
    if not child.status.finished:
        return None
    if child.status is RunStatus.SUCCEEDED:
        return "ok", child.output_ref or w.codec.encode(None, scope=f"{child.run_id}/output")
    return "fail", children.child_error(key, branch, child)


#: the call/parallel handler with this kind's verdict on its children
HANDLER = children.ChildrenHandler(judge)
