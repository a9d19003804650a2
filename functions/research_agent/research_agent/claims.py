"""Claims: prose sentences that state at least one quantity, and the words that say what they measure."""

from __future__ import annotations

import re
from collections.abc import Iterable

from research_agent.base import Record
from research_agent.quantities import Quantity, find_quantities, find_years
from research_agent.sentences import is_prose, split_sentences
from research_agent.text_utils import stem, terms, words

# Words that say nothing about *what* a figure measures; units are handled separately.
_GENERIC_TEXT = """according report reports reported estimate estimates said says figure figures number data
    end year years percent cent gw mw gwh mwh kwh kw twh hour hours cycle cycles full typical typically
    average count level levels new now record well including include"""
_GENERIC = frozenset(stem(w) for w in _GENERIC_TEXT.split())


class Claim(Record):
    id: str
    source: str
    text: str
    quantities: list[Quantity]
    years: list[int]


def extract_claims(source: str, text: str, *, prefix: str = "c") -> list[Claim]:
    """Sentences of ``text`` that state at least one quantity."""
    claims: list[Claim] = []
    for i, sentence in enumerate(s for s in split_sentences(text) if is_prose(s)):
        quantities = find_quantities(sentence)
        if quantities:
            claims.append(
                Claim(
                    id=f"{prefix}{i}", source=source, text=sentence, quantities=quantities, years=find_years(sentence)
                )
            )
    return claims


def subject_terms(text: str) -> list[str]:
    return [t for t in terms(text) if t not in _GENERIC]


def window_terms(sentence: str, quantity_text: str, before: int = 8, after: int = 5) -> list[str]:
    """Subject terms within a few words of where ``quantity_text`` occurs in ``sentence``."""
    at = sentence.find(quantity_text)
    if at < 0:
        return subject_terms(sentence)
    return subject_terms(sentence[:at])[-before:] + subject_terms(sentence[at + len(quantity_text) :])[:after]


_ENTITY_RE = re.compile(r"\b(?:U\.S\.|[A-Z][A-Za-z]*(?:[-'][A-Za-z]+)*)")
_NOT_ENTITIES_TEXT = """GW GWh MW MWh kW kWh TW TWh Wh Celsius January February March April May June July August
    September October November December Monday Tuesday Wednesday Thursday Friday Saturday Sunday"""
_NOT_ENTITIES = frozenset(_NOT_ENTITIES_TEXT.split())
_ENTITY_ALIASES = {"u.s.": "us", "united": "us", "states": "us", "america": "us", "american": "us"}


def entities(sentence: str, known: frozenset[str] = frozenset()) -> set[str]:
    """Capitalised words and acronyms (places, companies, grids, chemistries). A sentence's first word
    counts only if it is ``known`` to be a name, i.e. seen capitalised mid-sentence elsewhere."""
    out: set[str] = set()
    for m in _ENTITY_RE.finditer(sentence):
        word = m.group(0)
        key = word.lower().removesuffix("'s")
        if word in _NOT_ENTITIES or (m.start() == 0 and key not in known):
            continue
        out.add(_ENTITY_ALIASES.get(key, key))
    return out


def surface_forms(texts: Iterable[str]) -> dict[str, str]:
    forms: dict[str, str] = {}
    for text in texts:
        for w in words(text):
            forms.setdefault(stem(w), w)
    return forms
