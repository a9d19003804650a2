"""Sentence splitting, tokenizing and HTML -> text."""

from __future__ import annotations

from research_agent.html_text import extract_document, html_to_text
from research_agent.sentences import is_prose, split_sentences
from research_agent.text_utils import cosine, idf_table, stem, terms, tfidf_vector


def test_split_handles_abbreviations_decimals_initials_and_acronyms() -> None:
    text = (
        "Prices fell to $1.2 billion in the U.S. Energy sector. Dr. Smith agreed, e.g. Tesla Inc. did too. "
        'J. R. Doe said "it works." Then 2024 came. What? Yes! The market grew 3.5% vs. 2023.'
    )
    assert split_sentences(text) == [
        "Prices fell to $1.2 billion in the U.S. Energy sector.",
        "Dr. Smith agreed, e.g. Tesla Inc. did too.",
        'J. R. Doe said "it works."',
        "Then 2024 came.",
        "What?",
        "Yes!",
        "The market grew 3.5% vs. 2023.",
    ]


def test_split_treats_newlines_as_paragraph_breaks_and_keeps_lowercase_continuations() -> None:
    text = "A heading\n\nFirst sentence here. second part stays. Third one.\nLast line without stop"
    assert split_sentences(text) == [
        "A heading",
        "First sentence here. second part stays.",
        "Third one.",
        "Last line without stop",
    ]


def test_is_prose_rejects_headings_bylines_and_questions() -> None:
    assert is_prose("Batteries stored more energy than ever in 2024.")
    assert not is_prose("Cheaper cells")
    assert not is_prose("By Maria Lindqvist | 18 February 2025")
    assert not is_prose("Do grid batteries actually lower electricity bills?")
    assert is_prose("Do grid batteries actually lower electricity bills?", allow_questions=True)


def test_stem_and_terms_are_consistent() -> None:
    assert stem("batteries") == stem("battery")
    assert stem("prices") == stem("price") == stem("priced")
    assert stem("efficiency") == stem("efficient")
    assert terms("The batteries of the grid, 85 percent") == ["battery", "grid", "percent"]
    assert "85" in terms("85 percent", keep_numbers=True)


def test_tfidf_cosine() -> None:
    docs = [["a", "b"], ["a", "c"], ["d"]]
    idf = idf_table(docs)
    va, vb, vd = (tfidf_vector(d, idf) for d in docs)
    assert cosine(va, va) == 1.0 or abs(cosine(va, va) - 1.0) < 1e-12
    assert 0.0 < cosine(va, vb) < 1.0
    assert cosine(va, vd) == 0.0
    assert cosine({}, va) == 0.0


PAGE = """<!DOCTYPE html><html><head><title>Big news | Outlet</title>
<meta name="description" content="A  short   description.">
<style>body { color: red }</style><script>var tracking = "do not keep";</script></head>
<body>
<header class="site-header"><nav><a href="/">Home</a><a href="/x">Markets</a></nav></header>
<div class="cookie-banner">We use cookies.</div>
<main><article>
<header><h1>Big news</h1><p class="byline">By A. Writer</p></header>
<p>First paragraph &amp; more.<br>Same block, new line.</p>
<h2>Section two</h2>
<p>Second <b>bold</b> paragraph.</p>
<div class="share-buttons">Share this</div>
<ul><li>Item one</li><li>Item two</li></ul>
</article>
<aside class="related"><p>Related story</p></aside></main>
<footer><p>Copyright Outlet</p></footer>
</body></html>"""


def test_extract_document_strips_boilerplate_and_keeps_structure() -> None:
    doc = extract_document(PAGE)
    assert doc.title == "Big news | Outlet"
    assert doc.description == "A short description."
    assert doc.headings == ["Big news", "Section two"]
    assert doc.text.split("\n\n") == [
        "Big news",
        "By A. Writer",
        "First paragraph & more.",
        "Same block, new line.",
        "Section two",
        "Second bold paragraph.",
        "Item one",
        "Item two",
    ]
    for junk in ("Home", "cookies", "tracking", "color", "Share this", "Related story", "Copyright"):
        assert junk not in doc.text


def test_html_without_article_keeps_body_text_minus_boilerplate() -> None:
    html = "<html><body><nav>Menu</nav><div><p>Hello world.</p></div><footer>Bye</footer></body></html>"
    assert html_to_text(html) == "Hello world."


def test_malformed_html_does_not_crash() -> None:
    assert "text" in html_to_text("<p>unclosed <b>text<div>more</p></span>")
