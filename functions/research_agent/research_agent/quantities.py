"""Finding quantities (numbers with units, money, percentages, ranges) and years in a sentence.

Units are normalised so that equivalent statements compare equal: ``13,000 MW`` is ``13 GW``,
``$125/kWh`` and ``$125 per kilowatt-hour`` are both ``USD/kWh``, ``four-hour`` is ``4 h``.
"""

from __future__ import annotations

import re

from research_agent.base import Record
from research_agent.text_utils import STOPWORDS, stem

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_WORD_NUMS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50,
    "hundred": 100,
}  # fmt: skip
_WNUM = "|".join(sorted(_WORD_NUMS, key=len, reverse=True))
# Longest alternatives first so that "GWh" wins over "GW".
_UNIT = (
    r"per\s?cent|percent|%|gigawatt-hours?|megawatt-hours?|kilowatt-hours?|gigawatts?|megawatts?|"
    r"kilowatts?|TWh|GWh|MWh|kWh|Wh\s?per\s?kilogram|Wh/kg|TW|GW|MW|kW|hours?|years?|"
    r"(?:full\s|complete\s|charge\s)?cycles?|"
    r"degrees\s?Celsius|°C"
)
_UNIT_TABLE: list[tuple[str, str, float]] = [
    (r"per\s?cent|percent|%", "%", 1.0),
    (r"twh", "GWh", 1000.0),
    (r"gwh|gigawatt-hours?", "GWh", 1.0),
    (r"mwh|megawatt-hours?", "GWh", 0.001),
    (r"kwh|kilowatt-hours?", "kWh", 1.0),
    (r"tw", "GW", 1000.0),
    (r"gw|gigawatts?", "GW", 1.0),
    (r"mw|megawatts?", "GW", 0.001),
    (r"kw|kilowatts?", "kW", 1.0),
    (r"wh\s?per\s?kilogram|wh/kg", "Wh/kg", 1.0),
    (r"hours?", "h", 1.0),
    (r"years?", "yr", 1.0),
    (r"(?:full|complete|charge)?cycles?", "cycles", 1.0),
    (r"degrees\s?celsius|°c", "°C", 1.0),
]
_SCALES = {"trillion": 1e12, "billion": 1e9, "bn": 1e9, "million": 1e6}
_CURRENCIES = {"us$": "USD", "$": "USD", "€": "EUR", "£": "GBP"}
_PER_UNITS = {"kwh": "kWh", "kilowatt-hour": "kWh", "mwh": "MWh", "megawatt-hour": "MWh", "kw": "kW",
              "kilowatt": "kW", "mw": "MW", "megawatt": "MW"}  # fmt: skip

_MONEY_RE = re.compile(
    rf"(?P<cur>US\$|\$|€|£)\s?(?P<a>{_NUM})(?:\s?(?:-|to)\s?(?:US\$|\$|€|£)?(?P<b>{_NUM}))?"
    rf"(?:\s?(?P<scale>trillion|billion|million|bn)\b)?"
    rf"(?:\s?(?:/|per|a|an)\s?(?P<per>kWh|kilowatt-hour|MWh|megawatt-hour|kW|kilowatt|MW|megawatt)\b)?",
    re.IGNORECASE,
)
_MEASURE_RE = re.compile(
    rf"(?<![\w.,$€£])(?P<a>{_NUM})(?:\s?(?:-|\u2013|to|or)\s?(?P<b>{_NUM}))?[\s-]?(?P<unit>{_UNIT})(?![\w])",
    re.IGNORECASE,
)
_WORD_MEASURE_RE = re.compile(
    rf"\b(?P<a>{_WNUM})(?:\s(?:to|or)\s(?P<b>{_WNUM}))?[\s-](?P<unit>hours?|years?|percent)\b",
    re.IGNORECASE,
)
_COUNT_RE = re.compile(rf"(?<![\w.,$€£])(?P<a>{_NUM})\s(?P<noun>[A-Za-z][a-z-]+s)\b")
_YEAR_RE = re.compile(r"(?<![\w$€£.,])(?P<y>19[5-9]\d|20\d\d)(?![\w%])")


class Quantity(Record):
    value: float  # midpoint, in ``unit``
    low: float
    high: float
    unit: str
    text: str  # as written

    def matches(self, other: Quantity, tolerance: float) -> bool:
        """Same unit and the value ranges overlap once widened by ``tolerance`` (relative)."""
        if self.unit != other.unit:
            return False
        slack = tolerance * max(abs(self.high), abs(other.high))
        return max(self.low, other.low) <= min(self.high, other.high) + slack

    def display(self) -> str:
        def fmt(x: float) -> str:
            if abs(x) >= 1e9 and self.unit in _CURRENCIES.values():
                return f"{x / 1e9:g} billion"
            return f"{x:,.6g}" if abs(x) >= 1000 else f"{x:g}"

        number = fmt(self.low) if self.low == self.high else f"{fmt(self.low)}-{fmt(self.high)}"
        if self.unit.startswith(("USD", "EUR", "GBP")):
            symbol = {"USD": "$", "EUR": "€", "GBP": "£"}[self.unit[:3]]
            return f"{symbol}{number}{self.unit[3:]}"
        return f"{number}%" if self.unit == "%" else f"{number} {self.unit}"


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _unit(raw: str) -> tuple[str, float]:
    low = raw.lower().replace(" ", "")
    for pattern, unit, factor in _UNIT_TABLE:
        if re.fullmatch(pattern, low):
            return unit, factor
    return raw, 1.0


def _make(a: float, b: float | None, unit: str, factor: float, text: str) -> Quantity:
    lo, hi = a * factor, (b if b is not None else a) * factor
    lo, hi = min(lo, hi), max(lo, hi)
    return Quantity(value=(lo + hi) / 2, low=lo, high=hi, unit=unit, text=text)


def find_quantities(sentence: str) -> list[Quantity]:
    """All quantities in ``sentence`` in order of appearance (years are not quantities)."""
    found: list[tuple[int, Quantity]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for m in _MONEY_RE.finditer(sentence):
        cur = _CURRENCIES[m.group("cur").lower()]
        scale = _SCALES.get((m.group("scale") or "").lower(), 1.0)
        per = m.group("per")
        unit = cur + (f"/{_PER_UNITS[per.lower()]}" if per else "")
        b = _num(m.group("b")) if m.group("b") else None
        found.append((m.start(), _make(_num(m.group("a")), b, unit, scale, m.group(0).strip())))
        taken.append(m.span())
    for m in _MEASURE_RE.finditer(sentence):
        if not free(*m.span()):
            continue
        unit, factor = _unit(m.group("unit"))
        b = _num(m.group("b")) if m.group("b") else None
        found.append((m.start(), _make(_num(m.group("a")), b, unit, factor, m.group(0))))
        taken.append(m.span())
    for m in _WORD_MEASURE_RE.finditer(sentence):
        if not free(*m.span()):
            continue
        unit, factor = _unit(m.group("unit"))
        a = float(_WORD_NUMS[m.group("a").lower()])
        b = float(_WORD_NUMS[m.group("b").lower()]) if m.group("b") else None
        found.append((m.start(), _make(a, b, unit, factor, m.group(0))))
        taken.append(m.span())
    for m in _COUNT_RE.finditer(sentence):
        noun = m.group("noun").lower()
        if not free(*m.span()) or noun in STOPWORDS or _YEAR_RE.fullmatch(m.group("a")):
            continue
        found.append((m.start(), _make(_num(m.group("a")), None, stem(noun), 1.0, m.group(0))))
        taken.append(m.span())
    return [q for _, q in sorted(found, key=lambda item: item[0])]


def find_years(sentence: str) -> list[int]:
    """Calendar years mentioned in ``sentence`` (sorted, unique)."""
    return sorted({int(m.group("y")) for m in _YEAR_RE.finditer(sentence)})
