"""Settings from the STEPCHAIN_* environment (no I/O)."""

from __future__ import annotations

import pytest

from stepchain import ValidationError
from stepchain.settings import TRANSPORTS, Settings
from stepchain.store.payloads import DEFAULT_INLINE_LIMIT

BASE = {"STEPCHAIN_TABLE": "runs", "STEPCHAIN_BUCKET": "payloads"}


def test_minimal_environment_gives_the_defaults() -> None:
    s = Settings.from_env(BASE)
    assert (s.table, s.bucket, s.transport) == ("runs", "payloads", "stepfunctions")
    assert dict(s.state_machines) == {} and dict(s.queues) == {}
    assert (s.retention_days, s.inline_limit) == (30, DEFAULT_INLINE_LIMIT)


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCHAIN_TABLE", "t-env")
    monkeypatch.setenv("STEPCHAIN_BUCKET", "b-env")
    monkeypatch.setenv("STEPCHAIN_TRANSPORT", "sqs")
    monkeypatch.setenv("STEPCHAIN_QUEUES", '{"*": "https://q/default"}')
    s = Settings.from_env()
    assert (s.table, s.bucket, s.transport) == ("t-env", "b-env", "sqs")
    assert s.queue_for("anything") == "https://q/default"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "STEPCHAIN_TABLE, STEPCHAIN_BUCKET"),
        ({"STEPCHAIN_TABLE": "t"}, "STEPCHAIN_BUCKET"),
        ({"STEPCHAIN_TABLE": "", "STEPCHAIN_BUCKET": "b"}, "STEPCHAIN_TABLE"),
    ],
)
def test_table_and_bucket_are_required(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        Settings.from_env(env)


def test_full_environment() -> None:
    env = {
        **BASE,
        "STEPCHAIN_TRANSPORT": "sqs",
        "STEPCHAIN_STATE_MACHINES": '{"agent": "arn:sm:agent", "other": "arn:sm:other"}',
        "STEPCHAIN_QUEUES": ' {"fetch": "https://q/fetch", "*": "https://q/default"} ',
        "STEPCHAIN_RETENTION_DAYS": "7",
        "STEPCHAIN_INLINE_LIMIT": "1024",
    }
    s = Settings.from_env(env)
    assert s.transport == "sqs"
    assert (s.retention_days, s.inline_limit) == (7, 1024)
    assert s.queue_for("fetch") == "https://q/fetch"
    assert s.queue_for("summarize") == "https://q/default"
    assert s.state_machine_for("agent") == "arn:sm:agent"
    assert s.state_machine_for("other") == "arn:sm:other"
    with pytest.raises(ValidationError, match="no state machine"):
        s.state_machine_for("unknown")


def test_single_state_machine_arn_is_the_default_for_every_workflow() -> None:
    s = Settings.from_env({**BASE, "STEPCHAIN_STATE_MACHINE_ARN": "arn:sm:only"})
    assert s.state_machine_for("anything") == "arn:sm:only"
    both = Settings.from_env(
        {**BASE, "STEPCHAIN_STATE_MACHINE_ARN": "arn:sm:fallback", "STEPCHAIN_STATE_MACHINES": '{"agent": "arn:sm:a"}'}
    )
    assert both.state_machine_for("agent") == "arn:sm:a"
    assert both.state_machine_for("other") == "arn:sm:fallback"
    explicit = Settings.from_env(
        {**BASE, "STEPCHAIN_STATE_MACHINE_ARN": "arn:sm:single", "STEPCHAIN_STATE_MACHINES": '{"*": "arn:sm:star"}'}
    )
    assert explicit.state_machine_for("x") == "arn:sm:star"  # an explicit "*" wins


def test_empty_values_fall_back_to_defaults() -> None:
    env = {
        **BASE,
        "STEPCHAIN_TRANSPORT": "",
        "STEPCHAIN_QUEUES": "  ",
        "STEPCHAIN_RETENTION_DAYS": "",
        "STEPCHAIN_INLINE_LIMIT": "",
    }
    s = Settings.from_env(env)
    assert (s.transport, dict(s.queues), s.retention_days, s.inline_limit) == (
        "stepfunctions",
        {},
        30,
        DEFAULT_INLINE_LIMIT,
    )
    with pytest.raises(ValidationError, match="no queue"):
        s.queue_for("fetch")


@pytest.mark.parametrize("name", ["STEPCHAIN_QUEUES", "STEPCHAIN_STATE_MACHINES"])
@pytest.mark.parametrize("raw", ["{not json", '{"a": ', "'single'"])
def test_bad_json_is_a_validation_error(name: str, raw: str) -> None:
    with pytest.raises(ValidationError, match=f"{name} is not JSON"):
        Settings.from_env({**BASE, name: raw})


@pytest.mark.parametrize("raw", ['["a", "b"]', '"text"', "3"])
def test_json_that_is_not_an_object_is_a_validation_error(raw: str) -> None:
    with pytest.raises(ValidationError, match="must be a JSON object"):
        Settings.from_env({**BASE, "STEPCHAIN_QUEUES": raw})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_known_transports(transport: str) -> None:
    assert Settings.from_env({**BASE, "STEPCHAIN_TRANSPORT": transport}).transport == transport


@pytest.mark.parametrize("transport", ["kafka", "SQS", "step-functions"])
def test_unknown_transport_is_a_validation_error(transport: str) -> None:
    with pytest.raises(ValidationError, match="STEPCHAIN_TRANSPORT"):
        Settings.from_env({**BASE, "STEPCHAIN_TRANSPORT": transport})
    with pytest.raises(ValidationError):
        Settings(table="t", bucket="b", transport=transport)


def test_settings_are_frozen() -> None:
    s = Settings(table="t", bucket="b")
    with pytest.raises(AttributeError):
        s.table = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["STEPCHAIN_RETENTION_DAYS", "STEPCHAIN_INLINE_LIMIT"])
def test_non_integer_numbers_are_validation_errors_naming_the_variable(name: str) -> None:
    """Like every other bad setting, a non-integer number is a ValidationError that names the variable."""
    with pytest.raises(ValidationError, match=name):
        Settings.from_env({**BASE, name: "thirty"})


def test_the_generated_prefix_names_every_workflows_state_machine_and_an_older_map_still_wins() -> None:
    prefix = "arn:aws:states:us-east-1:000000000000:stateMachine:demo-"
    s = Settings.from_env({**BASE, "STEPCHAIN_STATE_MACHINE_PREFIX": prefix})
    assert s.state_machine_for("tool-agent") == prefix + "tool-agent"
    assert s.state_machines_of(["a", "b"]) == {"a": prefix + "a", "b": prefix + "b"}
    old = Settings.from_env(
        {**BASE, "STEPCHAIN_STATE_MACHINE_PREFIX": prefix, "STEPCHAIN_STATE_MACHINES": '{"a": "arn:a"}'}
    )
    assert old.state_machines_of(["a", "b"]) == {"a": "arn:a", "b": prefix + "b"}
    single = Settings.from_env({**BASE, "STEPCHAIN_STATE_MACHINE_ARN": "arn:only"})
    assert single.state_machines_of(["a"]) == {"*": "arn:only"}  # the handoff's fallback for every workflow
