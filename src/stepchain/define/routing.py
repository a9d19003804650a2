"""Run-time routing: a step declared with ``routes`` chooses its successor by returning ``goto(to, value)``.

>>> wf = Workflow("guess", max_iterations=20)
>>> @wf.step(routes=("guess", END))
... def guess(ctx, state):
...     if state["n"] == state["target"]:
...         return goto(END, state["n"])
...     return goto("guess", {**state, "n": state["n"] + 1})

A route to a node at or before the routing node's chain position starts the next loop iteration
(the successor's key carries it: ``guess~00001``); a forward route stays in the iteration. So
within one iteration the run only moves forward and each (node, iteration) runs at most once: a
crash or a duplicate delivery never runs a completed iteration again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the route that finishes the run with the route's value as its output
END = "__end__"


@dataclass(frozen=True)
class Route:
    """What a routing step returns: hand ``value`` to node ``to`` (or finish the run: ``to=END``)."""

    to: str
    value: Any = None


def goto(to: str, value: Any = None) -> Route:
    """Route to node ``to`` (one of the step's declared ``routes``, or :data:`END`) with ``value`` as its input."""
    return Route(to, value)


__all__ = ["END", "Route", "goto"]
