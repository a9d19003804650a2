"""Claim-check for large values.

Every step input and output is stored as a small JSON *reference string*:

* ``{"v": <value>}`` when the serialized value is at most ``inline_limit`` bytes, or
* ``{"blob": "<key>", "bytes": n, "sha256": "..."}`` when it is larger; the value itself lives in the
  blob store (S3 in AWS), under a content-addressed key, so writing it twice is harmless.

DynamoDB items stay far below 400 KB, and messages between steps carry only run/node ids.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stepchain.exceptions import BlobUnavailable, PayloadError, ValidationError
from stepchain.requests import instrument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_INLINE_LIMIT = 32 * 1024
#: default lifetime of a presigned download URL, and the longest one a blob store signs
DEFAULT_URL_TTL_S = 300
MAX_URL_TTL_S = 900
#: the query parameter every SigV4 presigned URL carries (a SigV2 one has ``Signature=`` and ``Expires=``)
SIGV4_QUERY = "X-Amz-Algorithm=AWS4-HMAC-SHA256"


class BlobStore(ABC):
    """Port: where large values go."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    def presigned_url(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str | None:
        """A URL a client can download the value from, when the store can make one."""
        return None


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._data[key] = data
            self.puts += 1

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._data[key]
            except KeyError:
                raise BlobUnavailable(f"blob {key!r} is missing") from None


class S3BlobStore(BlobStore):
    """Blobs in an S3 bucket (SSE is set on the bucket; we also ask for it per object).

    Presigned URLs are always SigV4 (``X-Amz-Algorithm=AWS4-HMAC-SHA256``, ``X-Amz-Expires``) and live at
    most :data:`MAX_URL_TTL_S`. botocore presigns S3 with SigV2 unless the client was created with
    ``Config(signature_version="s3v4")``: the client this store creates has it, and an injected client that
    presigns SigV2 is not used for URLs; a SigV4 twin of it (same region, same custom endpoint, credentials
    from the default chain) is made once instead (``presign_client`` injects one)."""

    def __init__(
        self, bucket: str, client: S3Client | None = None, prefix: str = "payloads/", *, presign_client: Any = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = instrument(client)
        self._presigner = presign_client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = instrument(boto3.client("s3", config=Config(signature_version="s3v4")))
        return self._client

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise BlobUnavailable(f"blob {key!r} is missing from s3://{self.bucket}") from None

    def presigned_url(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str | None:
        if not 1 <= expires_s <= MAX_URL_TTL_S:
            raise ValidationError(f"a presigned URL lives 1..{MAX_URL_TTL_S} s, not {expires_s}")
        params = {"Bucket": self.bucket, "Key": self.prefix + key}
        signer: Any = self._presigner or self.client
        url = str(signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))
        if SIGV4_QUERY not in url and self._presigner is None:  # a SigV2 client: sign with a SigV4 twin
            self._presigner = signer = sigv4_twin(self.client)
            url = str(signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))
        if SIGV4_QUERY not in url:
            raise PayloadError("the S3 client used for presigning does not sign with SigV4 (s3v4)")
        return url


def sigv4_twin(client: Any) -> Any:
    """An S3 client like ``client`` (region, custom endpoint, other config) that presigns with SigV4."""
    import boto3
    from botocore.config import Config

    endpoint = client.meta.endpoint_url
    custom = endpoint and not (urlsplit(endpoint).hostname or "").endswith((".amazonaws.com", ".amazonaws.com.cn"))
    return boto3.client(
        "s3",
        region_name=client.meta.region_name,
        endpoint_url=endpoint if custom else None,
        config=client.meta.config.merge(Config(signature_version="s3v4")),
    )


def to_jsonable(value: Any) -> Any:
    """Pydantic models become dicts; everything else must already be JSON-compatible."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def _json_default(value: Any) -> Any:
    """``json.dumps`` hook: pydantic models nested anywhere in the value become dicts too."""
    dumped = to_jsonable(value)
    if dumped is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return dumped


class PayloadCodec:
    """Encodes values into reference strings, offloading large ones to a :class:`BlobStore`."""

    def __init__(self, blobs: BlobStore, inline_limit: int = DEFAULT_INLINE_LIMIT) -> None:
        self.blobs = blobs
        self.inline_limit = inline_limit

    def encode(self, value: Any, *, scope: str) -> str:
        try:
            data = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"value is not JSON-serializable: {exc}") from exc
        if len(data) <= self.inline_limit:
            return '{"v":' + data.decode() + "}"
        digest = hashlib.sha256(data).hexdigest()
        key = f"{scope}/{digest}.json"
        self.blobs.put(key, data)
        return json.dumps({"blob": key, "bytes": len(data), "sha256": digest})

    def decode(self, ref: str | None) -> Any:
        if ref is None:
            return None
        doc = json.loads(ref)
        if "v" in doc:
            return doc["v"]
        data = self.blobs.get(doc["blob"])
        if hashlib.sha256(data).hexdigest() != doc["sha256"]:
            raise BlobUnavailable(f"blob {doc['blob']!r} does not match its checksum")
        return json.loads(data)

    @staticmethod
    def blob_key(ref: str | None) -> str | None:
        """The blob key of an offloaded value, or None when the value is inline."""
        if ref is None:
            return None
        key = json.loads(ref).get("blob")
        return None if key is None else str(key)

    @staticmethod
    def size(ref: str | None) -> int:
        if ref is None:
            return 0
        doc = json.loads(ref)
        return int(doc["bytes"]) if "blob" in doc else len(ref) - 6
