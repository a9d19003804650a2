"""The claim-check codec: inline vs offloaded values, content-addressed keys, integrity (no I/O)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from pydantic import BaseModel

from stepchain import MemoryBlobStore, PayloadCodec, PayloadError, ValidationError
from stepchain.exceptions import BlobUnavailable
from stepchain.store.payloads import DEFAULT_INLINE_LIMIT


class Page(BaseModel):
    url: str
    fetched: dt.datetime
    words: int


@pytest.fixture
def blobs() -> MemoryBlobStore:
    return MemoryBlobStore()


def serialized(value: Any) -> bytes:
    """The codec's canonical JSON of a value (compact separators)."""
    return json.dumps(value, separators=(",", ":")).encode()


def value_of_size(n: int) -> str:
    """A string whose JSON encoding is exactly ``n`` bytes."""
    return "x" * (n - 2)


def test_small_values_are_inline(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs)
    for value in (None, 0, 1.5, "text", [1, "a", None], {"k": {"n": [True, False]}}, "unicodé ✓"):
        ref = codec.encode(value, scope="run/step")
        assert json.loads(ref) == {"v": value}
        assert codec.decode(ref) == value
        assert PayloadCodec.blob_key(ref) is None
    assert blobs.puts == 0
    assert codec.decode(None) is None
    assert PayloadCodec.blob_key(None) is None and PayloadCodec.size(None) == 0


def test_inline_limit_boundary(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs, inline_limit=100)
    at_limit = value_of_size(100)
    assert len(serialized(at_limit)) == 100
    ref = codec.encode(at_limit, scope="s")
    assert PayloadCodec.blob_key(ref) is None and blobs.puts == 0
    assert PayloadCodec.size(ref) == 100
    over = value_of_size(101)
    ref = codec.encode(over, scope="s")
    assert PayloadCodec.blob_key(ref) is not None and blobs.puts == 1
    assert PayloadCodec.size(ref) == 101
    assert codec.decode(ref) == over


def test_default_limit_is_32_kib(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs)
    assert codec.inline_limit == DEFAULT_INLINE_LIMIT == 32 * 1024
    assert PayloadCodec.blob_key(codec.encode(value_of_size(32 * 1024), scope="s")) is None
    assert PayloadCodec.blob_key(codec.encode(value_of_size(32 * 1024 + 1), scope="s")) is not None


def test_offloaded_value_is_content_addressed(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs, inline_limit=64)
    value = {"text": "y" * 500, "n": [1, 2, 3]}
    data = serialized(value)
    digest = hashlib.sha256(data).hexdigest()
    ref = codec.encode(value, scope="run1/fetch")
    doc = json.loads(ref)
    assert doc == {"blob": f"run1/fetch/{digest}.json", "bytes": len(data), "sha256": digest}
    assert len(ref) < 200  # the reference stays small whatever the value's size
    assert blobs.get(doc["blob"]) == data
    # the same value again: the same key and reference (writing it twice is harmless)
    assert codec.encode(value, scope="run1/fetch") == ref
    assert codec.encode(dict(reversed(list(value.items()))), scope="run1/fetch") != ref  # key order is content
    other = codec.encode({"text": "z" * 500}, scope="run1/fetch")
    assert PayloadCodec.blob_key(other) != doc["blob"]
    elsewhere = codec.encode(value, scope="run2/fetch")
    assert PayloadCodec.blob_key(elsewhere) == f"run2/fetch/{digest}.json"
    assert codec.decode(ref) == value
    assert PayloadCodec.size(ref) == len(data)


def test_checksum_mismatch_is_blob_unavailable(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs, inline_limit=10)
    ref = codec.encode("a" * 100, scope="s")
    key = PayloadCodec.blob_key(ref)
    assert key is not None
    blobs.put(key, serialized("b" * 100))  # same size, different content
    with pytest.raises(BlobUnavailable, match="checksum"):
        codec.decode(ref)


def test_missing_blob_is_blob_unavailable(blobs: MemoryBlobStore) -> None:
    writer = PayloadCodec(blobs, inline_limit=10)
    ref = writer.encode("a" * 100, scope="s")
    reader = PayloadCodec(MemoryBlobStore(), inline_limit=10)  # a store that never saw the blob
    with pytest.raises(BlobUnavailable, match="missing"):
        reader.decode(ref)


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        b"bytes",
        float("nan"),
        {"inf": float("inf")},
        {"when": dt.datetime(2026, 1, 1)},
        {(1, 2): "tuple key"},
    ],
)
def test_non_json_values_are_payload_errors(blobs: MemoryBlobStore, value: Any) -> None:
    codec = PayloadCodec(blobs)
    with pytest.raises(PayloadError):
        codec.encode(value, scope="s")
    assert blobs.puts == 0


def test_error_families() -> None:
    assert issubclass(PayloadError, ValidationError)  # the caller's value: terminal, 4xx
    assert not issubclass(BlobUnavailable, ValidationError)  # the store's fault: 5xx
    assert (PayloadError.http_status, BlobUnavailable.http_status) == (400, 500)


def test_pydantic_model_is_serialized_as_json(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs)
    page = Page(url="https://example.org", fetched=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), words=42)
    ref = codec.encode(page, scope="s")
    assert codec.decode(ref) == {"url": "https://example.org", "fetched": "2026-01-02T03:04:05Z", "words": 42}
    assert Page.model_validate(codec.decode(ref)) == page


def test_pydantic_models_nested_in_containers_are_serialized(blobs: MemoryBlobStore) -> None:
    """A step returning ``[Page, ...]`` or ``{"pages": [Page, ...]}`` is as common as returning a Page."""
    codec = PayloadCodec(blobs)
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    pages = [Page(url=f"u{i}", fetched=when, words=i) for i in range(2)]
    expected = [{"url": f"u{i}", "fetched": "2026-01-02T00:00:00Z", "words": i} for i in range(2)]
    assert codec.decode(codec.encode(pages, scope="s")) == expected
    assert codec.decode(codec.encode({"pages": pages, "n": 2}, scope="s")) == {"pages": expected, "n": 2}


def test_large_pydantic_model_is_offloaded(blobs: MemoryBlobStore) -> None:
    codec = PayloadCodec(blobs, inline_limit=50)
    page = Page(url="u" * 200, fetched=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), words=1)
    ref = codec.encode(page, scope="s")
    assert PayloadCodec.blob_key(ref) is not None
    assert codec.decode(ref)["url"] == "u" * 200


def test_memory_blob_store_has_no_presigned_url(blobs: MemoryBlobStore) -> None:
    blobs.put("k", b"{}")
    assert blobs.presigned_url("k") is None
    with pytest.raises(BlobUnavailable):
        blobs.get("other")
