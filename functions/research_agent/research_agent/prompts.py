"""Prompts shared by every LLM implementation.

Prompts are plain instructions a hosted model can follow, with the material in tagged blocks
(``<document>``, ``<research_input>``) that :class:`~research_agent.llm.OfflineLLM` parses back out, so
the offline model answers the very same prompt deterministically.
"""

from __future__ import annotations

import json
import re
from typing import Any

SUMMARIZE_SYSTEM = (
    "You are a careful research assistant. Summarize sources faithfully: keep every figure, unit, "
    "year and named entity exactly as written, add nothing that the source does not say, and write "
    "plain sentences without bullet points or preamble."
)
DRAFT_SYSTEM = (
    "You are a research analyst writing a short, neutral briefing in Markdown. Use only the material "
    "provided. Cite sources with bracketed numbers such as [1] or [2][3] after each statement, using "
    "only the numbers given. Never invent figures."
)

_DOC_RE = re.compile(r"<document(?P<attrs>[^>]*)>\n?(?P<body>.*?)\n?</document>", re.DOTALL)
_MAX_SENT_RE = re.compile(r"at most (\d+) sentences")
_QUESTION_RE = re.compile(r"<question>(.*?)</question>", re.DOTALL)
_INPUT_RE = re.compile(r"<research_input>\n?(.*?)\n?</research_input>", re.DOTALL)


def _escape(text: str) -> str:
    return text.replace("</document>", "</ document>").replace("</research_input>", "</ research_input>")


def build_summarize_prompt(*, question: str, title: str, url: str, text: str, max_sentences: int) -> str:
    """Ask for a summary of one source, focused on the research question."""
    safe_title = title.replace('"', "'")
    return (
        f"Summarize the document below in at most {max_sentences} sentences, keeping the facts and "
        "figures most relevant to the research question.\n\n"
        f"<question>{_escape(question)}</question>\n\n"
        f'<document title="{safe_title}" url="{url}">\n{_escape(text)}\n</document>'
    )


def parse_summarize_prompt(prompt: str) -> tuple[str, str, int]:
    """(document text, question, max sentences) from a summarize prompt; lenient on free-form text."""
    doc = _DOC_RE.search(prompt)
    question = _QUESTION_RE.search(prompt)
    max_sent = _MAX_SENT_RE.search(prompt)
    return (
        doc.group("body").replace("</ document>", "</document>") if doc else prompt,
        question.group(1).strip() if question else "",
        int(max_sent.group(1)) if max_sent else 5,
    )


def build_draft_prompt(payload: dict[str, Any]) -> str:
    """Ask for the report body from the structured research input (see ``report.draft_payload``)."""
    body = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True)
    return (
        "Write the body of a research briefing that answers the question in the research input. "
        "Produce exactly two Markdown sections:\n"
        "## Summary\nOne paragraph (3-5 sentences) answering the question.\n"
        "## Key findings\nA bullet list, most important first. Prefer corroborated findings; mark "
        "single-source figures as such. Do not discuss the conflicting figures in detail: they are "
        "listed separately.\n\n"
        f"<research_input>\n{_escape(body)}\n</research_input>"
    )


def parse_draft_prompt(prompt: str) -> dict[str, Any]:
    """The structured research input embedded in a draft prompt (empty if there is none)."""
    match = _INPUT_RE.search(prompt)
    if not match:
        return {}
    try:
        data = json.loads(match.group(1).replace("</ research_input>", "</research_input>"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
