"""Rule-based sentence splitting that survives abbreviations, initials, acronyms and decimals."""

from __future__ import annotations

import re

# Abbreviations that essentially never end a sentence.
_NON_FINAL = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "v", "e.g", "i.e", "cf", "no",
        "nos", "fig", "figs", "approx", "est", "ca", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "nov", "dec", "gen", "gov", "sen", "rep", "dept", "univ", "vol", "pp",
    }
)  # fmt: skip
_BOUNDARY_RE = re.compile(r"([.!?]+)([\"'\u201d\u2019)\]]*)(\s+)")
_OPENERS = "\"'\u201c\u2018([" + "$\u20ac\u00a3"
_DOTTED_ACRONYM_RE = re.compile(r"^(?:[A-Za-z]\.){2,}$")


def _is_boundary(paragraph: str, match: re.Match[str]) -> bool:
    nxt_pos = match.end()
    if nxt_pos >= len(paragraph):
        return True
    nxt = paragraph[nxt_pos]
    if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
        return False
    if "." not in match.group(1) or match.group(1) != ".":
        return True  # "?", "!", "..." followed by a capital: a boundary
    start = paragraph.rfind(" ", 0, match.start()) + 1
    token = paragraph[start : match.start() + 1].lstrip("\"'(\u201c\u2018[")
    bare = token[:-1].lower()
    if bare in _NON_FINAL:
        return False
    if len(token) == 2 and token[0].isalpha() and token[0].isupper():
        return False  # an initial: "J. Smith"
    return not _DOTTED_ACRONYM_RE.match(token)  # "U.S. Energy", "e.g. Tesla"


def split_paragraph(paragraph: str) -> list[str]:
    """Split one paragraph (whitespace-normalised) into sentences."""
    text = " ".join(paragraph.split())
    out: list[str] = []
    start = 0
    for m in _BOUNDARY_RE.finditer(text):
        if _is_boundary(text, m):
            end = m.end(2)
            piece = text[start:end].strip()
            if piece:
                out.append(piece)
            start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; blank lines (and single newlines) are hard paragraph breaks."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*", text):
        if paragraph.strip():
            out.extend(split_paragraph(paragraph))
    return out


def is_prose(sentence: str, *, min_words: int = 5, allow_questions: bool = False) -> bool:
    """True for full declarative sentences (terminal punctuation, enough words); False for headings,
    bylines and crumbs, and (unless ``allow_questions``) for questions such as rhetorical headlines."""
    s = sentence.rstrip("\"'\u201d\u2019)]")
    endings = {".", "!", "?"} if allow_questions else {".", "!"}
    return len(sentence.split()) >= min_words and s[-1:] in endings
