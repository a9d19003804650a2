"""The runs API's one request-decoding layer: every way a request body can fail to decode becomes
a 4xx JSON error here, before routing reaches a handler and before anything is stored.

:func:`normalize` runs on the raw API Gateway event. For a route that declares a JSON request body
(in the OpenAPI document) it checks, in this order:

1. ``Content-Type``: absent, ``application/json`` or ``application/<anything>+json``, with no
   ``charset`` other than UTF-8; anything else (``multipart/form-data``, a malformed header) is
   415 ``unsupported_media_type``;
2. the bytes: valid base64 when API Gateway says so, valid UTF-8: else 400 ``malformed_body``;
   at most :data:`MAX_BODY_BYTES`: else 413 ``payload_too_large``;
3. the JSON text: strict JSON (no ``NaN``/``Infinity``), else 400 ``malformed_json``;
4. the JSON value: it must be one that can be stored and served back unchanged: nesting at most
   :data:`MAX_DEPTH` levels, integers of at most :data:`MAX_INT_DIGITS` digits, finite floats,
   strings and keys without lone surrogates, no duplicate keys in an object, and a top-level type
   the route declares (an array is never taken for an object): else 422 ``validation_error``.

The event then goes on with the body re-serialized as canonical JSON and ``Content-Type:
application/json``, so what the route's pydantic validation sees is exactly the decoded value.
A route without a request body never looks at the body (it is dropped). Nothing here raises
anything but :class:`RequestRejected`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: request bodies above this are refused with 413 (the SQS / Step Functions payload limit)
MAX_BODY_BYTES = 256 * 1024
#: deepest accepted nesting of arrays and objects (the top-level value is depth 1). Stored values
#: are served back inside a response object, whose own encoder stops at a few hundred levels.
MAX_DEPTH = 64
#: deepest stored value a response carries inline (a response adds a level or two; the encoder
#: behind it stops at 255): a step may return deeper values than requests may carry
MAX_SERVED_DEPTH = 200
#: longest accepted integer literal (Python refuses to convert longer ones to and from text)
MAX_INT_DIGITS = 4300

_JSON_MEDIA = re.compile(r"^application/(?:[a-z0-9.+-]+\+)?json$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


#: a control character in the (decoded) path: no route has one
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RequestRejected(Exception):
    """A request the decoding layer refuses: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class BodySpec:
    """What a route accepts as its body: the allowed top-level JSON types (None: any) and
    whether the body may be absent."""

    types: frozenset[str] | None
    required: bool


# ------------------------------------------------------------------------------ route specs
def body_specs(openapi: Mapping[str, Any]) -> list[tuple[re.Pattern[str], str, BodySpec | None]]:
    """(path regex, METHOD, body spec or None) for every operation of an OpenAPI document."""
    components = openapi.get("components", {}).get("schemas", {})
    table = []
    for path, ops in openapi["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "/*$")
        for method, op in ops.items():
            body = op.get("requestBody")
            spec = None
            if body is not None:
                schema = body.get("content", {}).get("application/json", {}).get("schema", {})
                spec = BodySpec(_types(schema, components), bool(body.get("required")))
            table.append((rx, method.upper(), spec))
    return table


def _types(schema: Mapping[str, Any], components: Mapping[str, Any]) -> frozenset[str] | None:
    """The top-level JSON types a schema admits; None when it admits any."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _types(components.get(ref.rsplit("/", 1)[-1], {}), components)
    if "anyOf" in schema or "oneOf" in schema:
        out: set[str] = set()
        for sub in schema.get("anyOf", schema.get("oneOf", [])):
            types = _types(sub, components)
            if types is None:
                return None
            out |= types
        return frozenset(out)
    kind = schema.get("type")
    if kind is None:
        return None
    return frozenset([kind] if isinstance(kind, str) else kind)


# ----------------------------------------------------------------------------------- decoding
def normalize(event: dict[str, Any], routes: Iterable[tuple[re.Pattern[str], str, BodySpec | None]]) -> None:
    """Decode and check ``event``'s body in place for its route (see the module docstring)."""
    method = str(event.get("httpMethod") or "").upper()
    path = str(event.get("path") or "")
    if _CONTROL.search(path):  # /events/approve%0A: a router's `$` matches before a final newline
        raise RequestRejected(404, "route_not_found", f"no route {method} {path!r}")
    spec = None
    matched = False
    for rx, m, s in routes:
        if m == method and rx.match(path):
            matched, spec = True, s
            break
    if not matched:
        return  # 404 / 405: the router answers
    if spec is None:
        event["body"], event["isBase64Encoded"] = None, False
        return
    value = decode_body(event, spec)
    _set_json_body(event, value)


def decode_body(event: Mapping[str, Any], spec: BodySpec) -> Any:
    """The body's JSON value (None when absent), or :class:`RequestRejected`."""
    raw = event.get("body")
    if raw is None or raw == "":
        if spec.required:
            raise RequestRejected(
                422, "validation_error", "request body is required", [_detail([], "missing", "a JSON body is required")]
            )
        return None
    _check_content_type(_header(event, "content-type"))
    data = _bytes(str(raw), bool(event.get("isBase64Encoded")))
    if len(data) > MAX_BODY_BYTES:
        raise RequestRejected(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRejected(400, "malformed_body", "request body is not valid UTF-8") from None
    value = _parse(text)
    _check_value(value, spec)
    return value


def _header(event: Mapping[str, Any], name: str) -> str | None:
    for field in ("headers", "multiValueHeaders"):
        for k, v in (event.get(field) or {}).items():
            if str(k).lower() == name:
                return str(v[-1] if isinstance(v, list) and v else v) if v not in (None, []) else None
    return None


def _check_content_type(value: str | None) -> None:
    if value is None or not value.strip():
        return  # no header: JSON is the only thing this API takes
    media, *params = (p.strip() for p in value.split(";"))
    bad = RequestRejected(415, "unsupported_media_type", "send the body as application/json")
    if not _JSON_MEDIA.match(media.lower()):
        raise bad
    for p in params:
        if not p:
            continue
        name, sep, val = p.partition("=")
        if not sep or not _TOKEN.match(name.strip()):
            raise bad
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise bad


def _bytes(raw: str, b64: bool) -> bytes:
    if not b64:
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the event itself
            raise RequestRejected(400, "malformed_body", "request body is not valid UTF-8") from None
    try:
        return base64.b64decode(raw.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise RequestRejected(400, "malformed_body", "request body is not valid base64") from None


def _parse(text: str) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def parse_int(s: str) -> int:
        if len(s.lstrip("-")) > MAX_INT_DIGITS:
            raise _Refused(f"an integer of more than {MAX_INT_DIGITS} digits")
        return int(s)

    def parse_float(s: str) -> float:
        f = float(s)
        if not math.isfinite(f):
            raise _Refused(f"a number out of range of a double ({s[:20]}...)")
        return f

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):  # which value would count is up to each parser: refuse the ambiguity
            raise _Refused("an object with a duplicate key")
        return obj

    try:
        return json.loads(
            text,
            parse_constant=no_constant,
            parse_int=parse_int,
            parse_float=parse_float,
            object_pairs_hook=unique_keys,
        )
    except _Refused as exc:
        raise RequestRejected(
            422,
            "validation_error",
            f"request body has {exc}",
            [_detail([], "value", str(exc))],
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # JSONDecodeError, NaN / Infinity
        raise RequestRejected(400, "malformed_json", "request body is not valid JSON") from None


class _Refused(ValueError):
    """Valid JSON this API refuses to store (422, not 400)."""


def _too_deep() -> RequestRejected:
    msg = f"nested more than {MAX_DEPTH} levels deep"
    return RequestRejected(422, "validation_error", f"request body is {msg}", [_detail([], "depth", msg)])


def _check_value(value: Any, spec: BodySpec) -> None:
    """Depth, strings and the top-level type (iteratively: no recursion on user data)."""
    kind = _json_type(value)
    if spec.types is not None and kind not in spec.types and not (kind == "integer" and "number" in spec.types):
        want = " or ".join(sorted(spec.types))
        raise RequestRejected(
            422,
            "validation_error",
            "request body does not match the schema",
            [_detail([], "type", f"expected {want}, got {kind}")],
        )
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                raise _too_deep()
            items = v.items() if isinstance(v, dict) else ((None, x) for x in v)
            for k, x in items:
                if k is not None:
                    _check_string(k)
                stack.append((x, depth + 1))
        elif isinstance(v, str):
            _check_string(v)


def depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRejected(
            422,
            "validation_error",
            "request body has a string that is not valid Unicode",
            [_detail([], "string", "lone surrogate escape (e.g. \\ud800) in a string")],
        ) from None


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _detail(loc: list[Any], kind: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "type": kind, "msg": msg}


def _set_json_body(event: dict[str, Any], value: Any) -> None:
    """The decoded value as the event's body: canonical JSON text, ``Content-Type: application/json``."""
    event["body"] = None if value is None else json.dumps(value, separators=(",", ":"))
    event["isBase64Encoded"] = False
    for field in ("headers", "multiValueHeaders"):
        headers = event.get(field)
        if headers is None:
            headers = event[field] = {}
        for k in [k for k in headers if str(k).lower() == "content-type"]:
            del headers[k]
        headers["Content-Type"] = "application/json" if field == "headers" else ["application/json"]
