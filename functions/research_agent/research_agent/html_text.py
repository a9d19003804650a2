"""HTML -> clean text with the standard library's ``html.parser``.

Boilerplate (nav, header, footer, aside, forms, scripts, styles, cookie banners) is dropped. When the
page has an ``<article>`` (or failing that a ``<main>``), only its content is kept. Block elements
become paragraphs separated by blank lines, so headings and paragraph breaks survive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_SKIP_TAGS = frozenset(
    {"script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg", "template",
     "iframe", "button", "select", "object"}
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    {"p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
     "blockquote", "pre", "table", "tr", "td", "th", "figcaption", "figure", "dd", "dt", "br", "hr",
     "title", "body"}
)  # fmt: skip
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BOILERPLATE_MARKERS = ("nav", "menu", "footer", "cookie", "banner", "sidebar", "share", "newsletter",
                        "advert", "promo", "breadcrumb", "related", "comments")  # fmt: skip
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})  # fmt: skip


@dataclass
class HtmlDocument:
    """What we keep from a page: its title, meta description, headings and clean body text."""

    title: str
    description: str
    text: str
    headings: list[str] = field(default_factory=list)


def _is_boilerplate(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    if tag in _SKIP_TAGS:
        return True
    for name, value in attrs:
        if value is None:
            continue
        if name == "role" and value in {"navigation", "banner", "contentinfo", "complementary"}:
            return True
        if name == "aria-hidden" and value == "true":
            return True
        if name in {"class", "id"}:
            tokens = re.split(r"[\s_-]+", value.lower())
            if any(t in _BOILERPLATE_MARKERS for t in tokens):
                return True
    return False


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_stack: list[str] = []  # open boilerplate elements (tag names)
        self.open_tags: list[str] = []
        self.content_depth = 0  # > 0 while inside <article>/<main>
        self.title_parts: list[str] = []
        self.description = ""
        self.in_title = False
        # Blocks: (text, inside_article, is_heading)
        self.blocks: list[tuple[str, bool, bool]] = []
        self.current: list[str] = []
        self.current_heading = False

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.blocks.append((text, self.content_depth > 0, self.current_heading))
        self.current = []
        self.current_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            d = dict(attrs)
            if (d.get("name") or "").lower() == "description" and not self.description:
                self.description = " ".join((d.get("content") or "").split())
            return
        if tag in _VOID:
            if tag in {"br", "hr"} and not self.skip_stack:
                self._flush()
            return
        in_content_header = tag == "header" and self.content_depth > 0
        if self.skip_stack or (_is_boilerplate(tag, attrs) and not in_content_header):
            self.skip_stack.append(tag)
            return
        if tag == "title":
            self.in_title = True
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag in {"article", "main"}:
            self.content_depth += 1
        if tag in _HEADINGS:
            self.current_heading = True
        self.open_tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            if tag in self.skip_stack:
                while self.skip_stack and self.skip_stack.pop() != tag:
                    pass
            return
        if tag == "title":
            self.in_title = False
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag in {"article", "main"} and self.content_depth > 0:
            self.content_depth -= 1
        if tag in self.open_tags:
            while self.open_tags and self.open_tags.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.skip_stack:
            self.current.append(data)


def extract_document(html: str) -> HtmlDocument:
    """Parse ``html`` into an :class:`HtmlDocument`."""
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    parser._flush()
    blocks = parser.blocks
    if any(inside for _, inside, _ in blocks):
        blocks = [b for b in blocks if b[1]]
    text = "\n\n".join(t for t, _, _ in blocks)
    headings = [t for t, _, heading in blocks if heading]
    title = " ".join("".join(parser.title_parts).split())
    return HtmlDocument(title=title, description=parser.description, text=text, headings=headings)


def html_to_text(html: str) -> str:
    """Just the clean body text of ``html``."""
    return extract_document(html).text
