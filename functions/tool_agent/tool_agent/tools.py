"""The agent's tools, and its own counters of what really executed (tests check them after crashes).

``search`` reads candidate documents and extracts a quantity; ``calculator`` evaluates arithmetic;
``send_email`` is the risky one (the workflow asks a human first) and delivers to an offline outbox
that can be asked whether a message with an idempotency key went out (the ``reconcile`` of its
``ctx.once``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from tool_agent.calculator import calculate
from tool_agent.corpus import document, find_quantity, sentences_with

#: executions by "<what>@<loop iteration>" (tools, document reads) and by name (LLM calls, lookups)
STATS: Counter[str] = Counter()
#: the offline mail provider: messages by idempotency key
OUTBOX: dict[str, dict[str, Any]] = {}


def read_document(name: str, metric: str, year: int, iteration: int) -> dict[str, Any]:
    """Read one candidate document for ``<metric> in <year>``."""
    STATS[f"read:{name}@{iteration}"] += 1
    doc = document(name)
    value = find_quantity(doc.text, metric, year)
    evidence = sentences_with(doc, metric.rstrip("s"), str(year))[:1]
    return {"doc": name, "value": value, "evidence": evidence[0] if evidence else None}


def run_calculator(expression: str, iteration: int) -> float:
    STATS[f"calculator@{iteration}"] += 1
    return calculate(expression)


def send_email(to: str, subject: str, body: str, *, key: str, iteration: int) -> dict[str, Any]:
    STATS[f"send_email@{iteration}"] += 1
    message = {"message_id": "msg-" + hashlib.sha256(key.encode()).hexdigest()[:12], "to": to}
    OUTBOX[key] = {**message, "subject": subject, "body": body}
    return message


def sent_email(key: str) -> dict[str, Any] | None:
    """The receipt of the message sent with ``key``, or None if it never went out."""
    sent = OUTBOX.get(key)
    return None if sent is None else {"message_id": sent["message_id"], "to": sent["to"]}
