"""Issue 16.8: the redaction pattern set (stepchain.api.redaction) against generated secrets.

A seeded property test (no extra dependency; ``REDACTION_SEED`` reproduces a failure): ARNs of every
partition in random case, glued to words and URL-encoded; account ids plain and dashed; access key ids;
provider keys; database URLs with passwords; table names; traceback paths; each embedded in random
surrounding text. The secret part must never survive, and ordinary text must come out unchanged.
"""

from __future__ import annotations

import os
import random
import string
import urllib.parse
from collections.abc import Callable

import pytest

from stepchain.api.redaction import redact

SEED = int(os.environ.get("REDACTION_SEED", "1616"))
CASES = 400
Gen = Callable[[random.Random], tuple[str, list[str]]]  # (text to embed, parts that must not survive)


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _account(rng: random.Random) -> str:
    return str(rng.randrange(10**11, 10**12))


def _arn(rng: random.Random) -> tuple[str, str]:
    partition = rng.choice(["aws", "aws-cn", "aws-us-gov"])
    service, resource = rng.choice(
        [
            ("iam", f"role/{_chars(rng, string.ascii_letters, 8)}"),
            ("sts", f"assumed-role/r{_chars(rng, string.ascii_lowercase, 5)}/s@x.com"),
            ("dynamodb", f"table/{_chars(rng, string.ascii_letters + '-_', 12)}"),
            ("s3", f"bkt-{_chars(rng, string.ascii_lowercase, 9)}/payloads/x.json"),
            ("lambda", f"function:fn{_chars(rng, string.ascii_letters, 7)}"),
        ]
    )
    acct = "" if service in ("s3",) else _account(rng)
    region = "" if service in ("iam", "s3") else rng.choice(["us-east-1", "eu-west-3", "cn-north-1"])
    arn = f"arn:{partition}:{service}:{region}:{acct}:{resource}"
    secret = resource.split("/")[-1] if "/" in resource else resource.split(":")[-1]
    return arn, secret


def gen_arn(rng: random.Random) -> tuple[str, list[str]]:
    arn, secret = _arn(rng)
    form = rng.choice(["plain", "upper", "glued", "encoded", "mixed"])
    if form == "upper":
        arn = arn.upper()
        secret = secret.upper()
    elif form == "glued":
        arn = rng.choice(["principal", "Resource=", "x"]) + arn
    elif form == "encoded":
        arn = urllib.parse.quote(arn, safe="")
        secret = urllib.parse.quote(secret, safe="")
    elif form == "mixed":
        arn = "".join(c.upper() if rng.random() < 0.5 else c for c in arn)
        return arn, [arn[arn.lower().index("arn") :]]
    acct = [p for p in arn.replace("%3A", ":").split(":") if p.isdigit() and len(p) == 12]
    return arn, [secret, *acct]


def gen_account(rng: random.Random) -> tuple[str, list[str]]:
    acct = _account(rng)
    dashed = f"{acct[:4]}-{acct[4:8]}-{acct[8:]}"
    value = rng.choice([acct, dashed])
    return f"account {value}", [value]


def gen_key_id(rng: random.Random) -> tuple[str, list[str]]:
    key = rng.choice(["AKIA", "ASIA", "AROA"]) + _chars(rng, string.ascii_uppercase + string.digits, 16)
    return key, [key]


def gen_provider_key(rng: random.Random) -> tuple[str, list[str]]:
    prefix = rng.choice(["sk-", "sk-proj-", "sk-ant-", "xoxb-", "xoxp-", "ghp_", "glpat-", "sk_live_", "AIza"])
    key = prefix + _chars(rng, string.ascii_letters + string.digits + "-_", rng.randrange(12, 60))
    return key, [key[len(prefix) :]]


def gen_db_url(rng: random.Random) -> tuple[str, list[str]]:
    scheme = rng.choice(["postgres", "postgresql+psycopg", "mysql", "redis", "mongodb+srv", "amqp"])
    password = _chars(rng, string.ascii_letters + string.digits + "!$*", rng.randrange(6, 24))
    url = f"{scheme}://{rng.choice(['app', 'admin', 'u_1'])}:{password}@db.internal:5432/prod"
    return url, [password]


def gen_table(rng: random.Random) -> tuple[str, list[str]]:
    name = rng.choice(["stepchain-", "prod_", "App."]) + _chars(rng, string.ascii_letters + string.digits, 10)
    form = rng.choice(["Table: {}", "table/{}", "TableName={}", "table '{}'", 'TABLE_NAME="{}"'])
    return form.format(name), [name]


def gen_traceback(rng: random.Random) -> tuple[str, list[str]]:
    root = rng.choice(["/var/task", "/opt/python/lib", "/home/ci", "/tmp/build", "/Users/kim"])
    path = f"{root}/{_chars(rng, string.ascii_lowercase, 6)}/mod_{_chars(rng, string.ascii_lowercase, 4)}.py"
    if rng.random() < 0.5:
        return f'File "{path}", line {rng.randrange(1, 900)}, in handler', [root]
    return f"cannot open {path}", [root]


GENERATORS: list[Gen] = [
    gen_arn, gen_account, gen_key_id, gen_provider_key, gen_db_url, gen_table, gen_traceback
]  # fmt: skip
WORDS = ["failed", "step", "error:", "the", "call", "(", ")", "->", "ok", "retry", "3", "of", "at", "in"]


def _surround(rng: random.Random, text: str) -> str:
    before = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 4)))
    after = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 4)))
    sep = rng.choice([" ", "\n", ": ", " '"])
    return f"{before}{sep}{text}{rng.choice([' ', chr(39), '. ', ', '])}{after}"


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.__name__)
def test_generated_secrets_never_survive_redaction(gen: Gen) -> None:
    rng = random.Random(f"{SEED}-{gen.__name__}")
    for i in range(CASES):
        value, secrets = gen(rng)
        text = _surround(rng, value)
        out = redact(text)
        assert "<redacted:" in out, (SEED, i, text)
        for secret in secrets:
            assert secret not in out, (SEED, i, text, out)


@pytest.mark.parametrize(
    "text",
    [
        "run 0195d2a4c0de0123456789ab failed",
        "HTTP 404 for https://example.com/articles/some-long-title-2024/index.html",
        "at 1764466380123 ms, 3 attempts, 12345678901 bytes",
        "the table is full; see step 'store' (attempt 2 of 3)",
        "phone 555-1234, order 2024-0001-77, isbn 978-3-16-148410-0",
        "skipped: task-list is empty, see relative/path/to/file.py",
        "GET /runs/0195d2a4c0de0123456789ab/steps/fetch returned 404",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_ordinary_generated_text_is_left_alone() -> None:
    rng = random.Random(SEED)
    for _ in range(CASES):
        text = " ".join(rng.choice([*WORDS, "step_7", "map[3]", "0x1f", "2026-12-07T02:35:00Z"]) for _ in range(8))
        assert redact(text) == text
