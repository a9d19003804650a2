"""Fetching pages: a ``Fetcher`` protocol, the offline ``CorpusFetcher`` and a real ``HttpFetcher``."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urldefrag, urlsplit

from research_agent.catalog import CorpusIndex, load_index
from research_agent.html_text import extract_document

DEFAULT_USER_AGENT = "stepchain-research-agent/0.1 (+https://stepchain.example/bot)"


@dataclass(frozen=True)
class Page:
    """A fetched page. ``fetched_ms`` is the wall-clock time (epoch ms) the fetch completed;
    ``elapsed_ms`` is how long it took."""

    url: str
    title: str
    text: str
    html_bytes: bytes
    fetched_ms: int
    elapsed_ms: int = 0

    def to_dict(self, *, include_html: bool = False) -> dict[str, Any]:
        """JSON-safe form (HTML is base64 and omitted by default: checkpoints stay small)."""
        out: dict[str, Any] = {
            "url": self.url,
            "title": self.title,
            "text": self.text,
            "fetched_ms": self.fetched_ms,
            "elapsed_ms": self.elapsed_ms,
        }
        if include_html:
            out["html_b64"] = base64.b64encode(self.html_bytes).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Page:
        html_b64 = data.get("html_b64")
        return cls(
            url=str(data["url"]),
            title=str(data["title"]),
            text=str(data["text"]),
            html_bytes=base64.b64decode(html_b64) if isinstance(html_b64, str) else b"",
            fetched_ms=int(data["fetched_ms"]),
            elapsed_ms=int(data.get("elapsed_ms", 0)),
        )


class FetchError(Exception):
    """A page could not be fetched. ``retryable`` says whether trying again could help."""

    def __init__(self, url: str, reason: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(f"fetch {url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status
        self.retryable = retryable


class Fetcher(Protocol):
    def fetch(self, url: str) -> Page: ...


def _now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


class CorpusFetcher:
    """Serves the shipped corpus as if it were the web.

    ``latency_ms`` simulates network time: one number for every page or a per-URL mapping (URLs not
    in it get ``default_latency_ms``). ``sleep`` and ``clock`` are injectable so tests never wait.
    """

    def __init__(
        self,
        index: CorpusIndex | None = None,
        *,
        latency_ms: int | Mapping[str, int] = 0,
        default_latency_ms: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index if index is not None else load_index()
        self._latency = latency_ms
        self._default_latency = default_latency_ms
        self._sleep = sleep
        self._clock = clock

    def latency_for(self, url: str) -> int:
        if isinstance(self._latency, int):
            return self._latency
        return self._latency.get(url, self._default_latency)

    def fetch(self, url: str) -> Page:
        key = urldefrag(url.strip())[0]
        entry = self.index.get(key) or self.index.get(key.rstrip("/"))
        if entry is None:
            raise FetchError(url, "not in corpus", status=404, retryable=False)
        delay_ms = self.latency_for(entry.url)
        if delay_ms > 0:
            self._sleep(delay_ms / 1000.0)
        html_bytes = self.index.path_for(entry).read_bytes()
        doc = extract_document(html_bytes.decode("utf-8"))
        return Page(
            url=entry.url,
            title=entry.title,
            text=doc.text,
            html_bytes=html_bytes,
            fetched_ms=_now_ms(self._clock),
            elapsed_ms=delay_ms,
        )


class HttpFetcher:
    """Fetches over HTTP(S) with ``urllib``: timeout, user agent, response size cap.

    ``proxies=None`` uses the environment's proxy settings; ``{}`` disables proxies.
    """

    _ACCEPTED_TYPES = ("text/html", "application/xhtml+xml", "text/plain")

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        user_agent: str = DEFAULT_USER_AGENT,
        max_bytes: int = 2_000_000,
        proxies: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.max_bytes = max_bytes
        handlers: list[urllib.request.BaseHandler] = []
        if proxies is not None:
            handlers.append(urllib.request.ProxyHandler(dict(proxies)))
        self._opener = urllib.request.build_opener(*handlers)
        self._clock = clock
        self._monotonic = monotonic

    def fetch(self, url: str) -> Page:
        if urlsplit(url).scheme not in {"http", "https"}:
            raise FetchError(url, "only http(s) URLs are supported")
        request = urllib.request.Request(
            url, headers={"User-Agent": self.user_agent, "Accept": "text/html,text/plain;q=0.8"}
        )
        started = self._monotonic()
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                ctype = resp.headers.get_content_type()
                if ctype not in self._ACCEPTED_TYPES:
                    raise FetchError(url, f"unsupported content type {ctype}", status=resp.status)
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(url, f"response larger than {self.max_bytes} bytes", status=resp.status)
                body: bytes = resp.read(self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise FetchError(url, f"response larger than {self.max_bytes} bytes", status=resp.status)
                charset = resp.headers.get_content_charset() or "utf-8"
                final_url = resp.geturl()
        except urllib.error.HTTPError as exc:
            retryable = exc.code == 429 or exc.code >= 500
            raise FetchError(url, f"HTTP {exc.code}", status=exc.code, retryable=retryable) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(url, f"network error: {reason}", retryable=True) from exc
        elapsed = int((self._monotonic() - started) * 1000)
        try:
            decoded = body.decode(charset, errors="replace")
        except LookupError:
            decoded = body.decode("utf-8", errors="replace")
        if ctype == "text/plain":
            title, text = "", decoded.strip()
        else:
            doc = extract_document(decoded)
            title, text = doc.title, doc.text
        return Page(
            url=final_url,
            title=title or final_url,
            text=text,
            html_bytes=body,
            fetched_ms=_now_ms(self._clock),
            elapsed_ms=elapsed,
        )
