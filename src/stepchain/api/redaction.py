"""The one pattern set that takes secrets and deployment details out of what the API shows of an error.

A step's error is stored and logged whole; the API's views and error bodies show :func:`redact` of it
(``stepchain.api.security.redact_error``, applied by the response models). Each rule is (name, pattern,
replacement), applied in order (ARNs before the account ids inside them). What is covered, in any case and
glued to surrounding words:

* ARNs, plain or URL-encoded (``arn%3Aaws%3A...``), of every partition;
* AWS access key ids (``AKIA...``, ``ASIA...`` and the other IAM unique-id prefixes);
* account ids: 12 digits standing alone, or written ``1234-5678-9012``;
* DynamoDB table names after ``table``/``TableName`` (``Table: my-table``, ``table/my-table``);
* provider API keys: ``sk-...`` / ``sk-proj-...`` / ``sk-ant-...``, Slack ``xox?-``, GitHub ``ghp_`` ...,
  GitLab ``glpat-``, Stripe ``sk_live_``, Google ``AIza...``;
* the password of a URL's user info (``postgres://user:<redacted>@host``);
* ``Bearer``/``Basic`` credentials, ``name=value`` where the name says secret, and 32+ character
  base64-ish runs mixing digits, lower and upper case (secret keys, session tokens, JWT parts);
* file paths of tracebacks (``File "/var/task/app.py"``) and absolute paths under the usual roots.

It is a pattern set, not a proof: a secret in none of these shapes passes. Step authors should not put
secrets in error messages; the API's view is a second line.
"""

from __future__ import annotations

import re

__all__ = ["RULES", "redact"]

_TOKEN_CHARS = r"A-Za-z0-9+/=_\-"
_COLON = r"(?::|%3[aA])"
_ROOTS = r"(?:var|opt|tmp|home|usr|root|Users|srv|app|workspace|mnt|etc|lib|proc|private)"
_PATH_CHARS = r"[\w.@+~-]"

#: (name, pattern, replacement), applied in this order
RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # a traceback's file: File "/var/task/app.py" (any absolute or Windows path inside the quotes)
    ("traceback-file", re.compile(r"""(File\s+["'])(?:[A-Za-z]:\\|/)[^"'\n]*(["'])"""), r"\1<redacted:path>\2"),
    # arn:partition:service:region:account:resource, any case, URL-encoded colons too, glued or not
    ("arn", re.compile(rf"(?i)arn{_COLON}aws[a-z-]*{_COLON}[^\s\"'<>,;()\[\]{{}}]+"), "<redacted:arn>"),
    # access key ids: long-term (AKIA), temporary (ASIA) and the other unique-id prefixes IAM uses
    (
        "key-id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
        "<redacted:key-id>",
    ),
    # provider API keys (OpenAI, Anthropic, Slack, GitHub, GitLab, Stripe, Google)
    (
        "provider-key",
        re.compile(
            r"(?<![A-Za-z0-9])(?:sk-(?:proj-|ant-|live-|test-)?|xox[abposr]-|gh[pousr]_|github_pat_|glpat-"
            r"|[sr]k_(?:live|test)_|AIza)[A-Za-z0-9_\-]{8,}"
        ),
        "<redacted:secret>",
    ),
    # the password of a URL's user info: scheme://user:password@host
    (
        "url-password",
        re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@\"']*:)([^\s@/\"']+)(@)"),
        r"\1<redacted:secret>\3",
    ),
    ("bearer", re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 <redacted:secret>"),
    # name=value / name: value where the name says secret (password=..., X-Amz-Signature=..., "token": "...")
    (
        "named-secret",
        re.compile(
            r"(?i)([\w-]*(?:secret|password|passwd|token|api[_-]?key|access[_-]?key|signature|credential"
            r"|authorization)[\w-]*)([\"']?\s*[:=]\s*[\"']?)(?!<redacted)([^\s\"'&,;]+)"
        ),
        r"\1\2<redacted:secret>",
    ),
    # a DynamoDB table named in a message: "Table: x", "table/x", "TableName=x", "table 'x'"
    (
        "table",
        re.compile(r"(?i)(\btable(?:[\s_-]?name)?\s*(?:[:=/]\s*[\"']?|[\"']))(?!<redacted)([A-Za-z0-9_.\-]{3,255})"),
        r"\1<redacted:table>",
    ),
    # a 32+ character run of base64/url-safe characters mixing digits, lower and upper case: a secret
    # access key, a session token, a signature or a JWT part (hex digests and words do not match)
    (
        "long-secret",
        re.compile(
            rf"(?<![{_TOKEN_CHARS}])(?=[{_TOKEN_CHARS}]*\d)(?=[{_TOKEN_CHARS}]*[a-z])(?=[{_TOKEN_CHARS}]*[A-Z])"
            rf"[{_TOKEN_CHARS}]{{32,}}(?![{_TOKEN_CHARS}])"
        ),
        "<redacted:secret>",
    ),
    # an absolute path under the usual roots (a traceback line, a config file)
    ("path", re.compile(rf"(?<![\w:/.])/{_ROOTS}(?:/{_PATH_CHARS}+)+"), "<redacted:path>"),
    # an AWS account id: 12 digits standing alone, or 1234-5678-9012
    ("account", re.compile(r"(?<!\d)\d{12}(?!\d)|(?<![\d-])\d{4}-\d{4}-\d{4}(?![\d-])"), "<redacted:account>"),
)


def redact(text: str) -> str:
    """``text`` with every :data:`RULES` match replaced by its ``<redacted:...>`` marker."""
    for _, pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text
