"""CorpusFetcher (offline corpus) and HttpFetcher (against a loopback http.server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from research_agent.catalog import load_index
from research_agent.fetcher import CorpusFetcher, FetchError, HttpFetcher, Page

URL = "https://energy-review.example/2025/02/grid-batteries-record-year"


def test_corpus_fetcher_serves_clean_text_and_raw_html() -> None:
    fetcher = CorpusFetcher(clock=lambda: 1_700_000_000.5)
    page = fetcher.fetch(URL)
    assert page.url == URL
    assert page.title == "Grid batteries had a record year in 2024"
    assert "170 GW" in page.text
    assert "All rights reserved" not in page.text and "dataLayer" not in page.text
    assert page.html_bytes.startswith(b"<!DOCTYPE html>")
    assert page.fetched_ms == 1_700_000_000_500
    assert page.elapsed_ms == 0


def test_corpus_fetcher_simulates_latency_without_sleeping_for_real() -> None:
    slept: list[float] = []
    fetcher = CorpusFetcher(latency_ms=250, sleep=slept.append)
    fetcher.fetch(URL)
    assert slept == [0.25]
    assert fetcher.fetch(URL).elapsed_ms == 250

    slept.clear()
    other = load_index().urls[1]
    per_url = CorpusFetcher(latency_ms={URL: 1200}, default_latency_ms=40, sleep=slept.append)
    per_url.fetch(URL)
    per_url.fetch(other)
    assert slept == [1.2, 0.04]


def test_corpus_fetcher_ignores_fragments_and_rejects_unknown_urls() -> None:
    fetcher = CorpusFetcher(sleep=lambda _s: None)
    assert fetcher.fetch(URL + "#section").url == URL
    with pytest.raises(FetchError) as info:
        fetcher.fetch("https://energy-review.example/missing")
    assert info.value.status == 404
    assert info.value.retryable is False
    assert info.value.url == "https://energy-review.example/missing"


def test_page_round_trips_through_json_dicts() -> None:
    page = CorpusFetcher().fetch(URL)
    light = page.to_dict()
    assert "html_b64" not in light
    assert Page.from_dict(light) == Page(page.url, page.title, page.text, b"", page.fetched_ms, page.elapsed_ms)
    assert Page.from_dict(page.to_dict(include_html=True)) == page


# --- HttpFetcher against a loopback server -----------------------------------------------------

HTML = (
    b"<html><head><title>Loopback page</title></head><body><nav>menu</nav>"
    b"<article><h1>Hi</h1><p>Body text here.</p></article></body></html>"
)


class _Handler(BaseHTTPRequestHandler):
    seen_user_agents: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # silence test output
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        _Handler.seen_user_agents.append(self.headers.get("User-Agent", ""))
        if self.path == "/page":
            self._send(200, HTML)
        elif self.path == "/latin1":
            self._send(200, "<p>Caf\u00e9 cr\u00e8me.</p>".encode("latin-1"), "text/html; charset=iso-8859-1")
        elif self.path == "/big":
            self._send(200, b"<p>" + b"x" * 5000 + b"</p>")
        elif self.path == "/image":
            self._send(200, b"\x89PNG", "image/png")
        elif self.path == "/busy":
            self._send(503, b"busy")
        elif self.path == "/slow":
            time.sleep(0.5)
            self._send(200, HTML)
        else:
            self._send(404, b"nope")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _fetcher(**kwargs: object) -> HttpFetcher:
    return HttpFetcher(proxies={}, **kwargs)  # type: ignore[arg-type]


def test_http_fetcher_fetches_and_extracts(server: str) -> None:
    page = _fetcher(user_agent="unit-test-agent/1.0", clock=lambda: 12.0).fetch(server + "/page")
    assert page.url == server + "/page"
    assert page.title == "Loopback page"
    assert page.text == "Hi\n\nBody text here."
    assert page.html_bytes == HTML
    assert page.fetched_ms == 12_000
    assert "unit-test-agent/1.0" in _Handler.seen_user_agents


def test_http_fetcher_decodes_declared_charset(server: str) -> None:
    assert _fetcher().fetch(server + "/latin1").text == "Caf\u00e9 cr\u00e8me."


def test_http_fetcher_maps_errors_to_fetch_error(server: str) -> None:
    fetcher = _fetcher(max_bytes=1000, timeout_s=0.1)
    with pytest.raises(FetchError) as missing:
        fetcher.fetch(server + "/missing")
    assert (missing.value.status, missing.value.retryable) == (404, False)
    with pytest.raises(FetchError) as busy:
        fetcher.fetch(server + "/busy")
    assert (busy.value.status, busy.value.retryable) == (503, True)
    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        fetcher.fetch(server + "/big")
    with pytest.raises(FetchError, match="unsupported content type image/png"):
        fetcher.fetch(server + "/image")
    with pytest.raises(FetchError) as slow:
        fetcher.fetch(server + "/slow")
    assert slow.value.retryable is True


def test_http_fetcher_rejects_non_http_schemes_and_unreachable_hosts() -> None:
    with pytest.raises(FetchError, match="only http"):
        _fetcher().fetch("file:///etc/passwd")
    with pytest.raises(FetchError) as info:
        _fetcher(timeout_s=1).fetch("http://127.0.0.1:9/")  # discard port: connection refused
    assert info.value.retryable is True
