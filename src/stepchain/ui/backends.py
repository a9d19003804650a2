"""Where the live view reads runs from: a deployed runs API over HTTP, or the API handler in process.

Both answer :meth:`Backend.request` with an :class:`ApiReply`, so the web server, ``stepchain watch``
and the tests do not care which one they talk to.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from stepchain.exceptions import StepchainError

if TYPE_CHECKING:
    from stepchain.engine import Engine

__all__ = ["ApiReply", "Backend", "EngineBackend", "HttpBackend", "UiError", "embedded_engine", "proxy_event"]

#: what the page may reach through the proxy (and nothing else of the backend)
ALLOWED_PREFIXES = ("/runs", "/approvals/", "/openapi.json")


class UiError(StepchainError):
    """The live view cannot reach or read its data source."""


@dataclass(frozen=True)
class ApiReply:
    status: int
    body: bytes
    content_type: str = "application/json"

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Backend(Protocol):
    """A runs API: ``path`` is the API path with its query string (``/runs/abc?x=1``)."""

    label: str

    def request(self, method: str, path: str, body: bytes | None = None) -> ApiReply: ...


def get_json(backend: Backend, path: str) -> Any:
    """GET ``path`` and return its JSON, or raise :class:`UiError` with the API's error message."""
    reply = backend.request("GET", path)
    doc = reply.json()
    if reply.status >= 400:
        err = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
        message = err.get("message") or reply.body[:200].decode("utf-8", "replace")
        raise UiError(f"{reply.status} {err.get('code', '')}: {message}")
    return doc


@dataclass
class HttpBackend:
    """A deployed runs API (API Gateway on AWS or LocalStack) at ``base_url`` (stage included).

    ``sigv4_region``: sign every request (service ``execute-api``) with the local AWS credentials;
    ``api_key``: send it as ``x-api-key``. Neither is ever logged or sent to the browser."""

    base_url: str
    api_key: str | None = None
    sigv4_region: str | None = None
    timeout_s: float = 25.0
    #: the page's long-poll of ``GET /runs/{id}/stream`` (under ``timeout_s`` and API Gateway's 29 s)
    stream_wait_s: float = 15.0
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.label = self.base_url

    def _headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self.sigv4_region:
            import boto3
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest

            creds = boto3.Session().get_credentials()
            if creds is None:
                raise UiError("--sigv4: no AWS credentials found (environment, profile or role)")
            req = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
            SigV4Auth(creds.get_frozen_credentials(), "execute-api", self.sigv4_region).add_auth(req)
            headers = dict(req.headers.items())
        return headers

    def request(self, method: str, path: str, body: bytes | None = None) -> ApiReply:
        url = self.base_url + path
        req = urllib.request.Request(url, data=body, method=method, headers=self._headers(method, url, body))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return ApiReply(resp.status, resp.read(), resp.headers.get("Content-Type") or "application/json")
        except urllib.error.HTTPError as exc:
            return ApiReply(exc.code, exc.read(), exc.headers.get("Content-Type") or "application/json")
        except (urllib.error.URLError, OSError) as exc:
            raise UiError(f"cannot reach {self.base_url}: {exc}") from exc


@dataclass(frozen=True)
class _ApiContext:
    """The Lambda context the API handler reads (Powertools' logger)."""

    aws_request_id: str
    function_name: str = "stepchain-ui"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:stepchain-ui"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def proxy_event(method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The API Gateway REST proxy event API Gateway would send for this request (stage ``local``)."""
    parts = urlsplit(path)
    query: dict[str, list[str]] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k, []).append(v)
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": hdrs or None,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "path": parts.path,
            "stage": "local",
            "httpMethod": method,
            "requestId": f"ui-{uuid.uuid4().hex[:12]}",
            "resourcePath": parts.path,
            "accountId": "000000000000",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body.decode("utf-8") if body is not None else None,
        "isBase64Encoded": False,
    }


class EngineBackend:
    """The runs API handler served in this process over ``engine`` (the embedded runtime has no API
    process). Requests are served one at a time (the API's resolver keeps per-request state globally)
    under :attr:`lock`; a caller that moves the engine in another thread may hold it meanwhile."""

    #: no long-poll: a request holds :attr:`lock`, so one held open would stall the page's other reads
    stream_wait_s = 0.0

    def __init__(self, engine: Engine, label: str = "embedded runtime") -> None:
        self.engine = engine
        self.label = label
        self.lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None = None) -> ApiReply:
        from stepchain.api import handle_api_event

        event = proxy_event(method, path, body)
        with self.lock:
            out = handle_api_event(self.engine, event, _ApiContext(event["requestContext"]["requestId"]))
        headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
        for k, vs in (out.get("multiValueHeaders") or {}).items():
            headers.setdefault(k.lower(), vs[-1])
        raw = out.get("body") or ""
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        if out.get("isBase64Encoded"):
            import base64

            data = base64.b64decode(data)
        return ApiReply(int(out["statusCode"]), data, headers.get("content-type", "application/json"))


def embedded_engine(endpoint: str, workflows: list[Any]) -> Engine:
    """An engine over the embedded runtime's emulator at ``endpoint`` (``stepchain.runtimes.local``'s table,
    bucket and step queue), registering ``workflows`` (needed to deliver events and redrive)."""
    import boto3

    from stepchain.runtimes.aws import AwsClients, build_engine
    from stepchain.runtimes.local import BUCKET, QUEUE, TABLE, client_env
    from stepchain.settings import Settings

    creds = client_env(endpoint)

    def client(service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=creds["AWS_REGION"],
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        )

    sqs = client("sqs")
    try:
        queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    except Exception as exc:  # botocore raises several unrelated types for "not there"
        raise UiError(f"no embedded runtime at {endpoint} (queue {QUEUE!r}): {exc}") from exc
    env = {
        "STEPCHAIN_TABLE": TABLE,
        "STEPCHAIN_BUCKET": BUCKET,
        "STEPCHAIN_TRANSPORT": "sqs",
        "STEPCHAIN_QUEUES": json.dumps({"*": queue_url}),
    }
    clients = AwsClients(dynamodb=client("dynamodb"), s3=client("s3"), sqs=sqs)
    return build_engine(workflows, Settings.from_env(env), clients=clients)
