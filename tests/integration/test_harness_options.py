"""Issue 17: the harnesses take the same options and behave alike. ``SqsHarness(virtual_sleep=True)`` raised
TypeError though the README says every harness takes it; ``LocalHarness`` (real processes, real time)
accepts ``virtual_sleep=False`` and refuses True with a reason."""

from __future__ import annotations

import inspect
import time

import pytest

from stepchain import Workflow
from stepchain.testing import Harness, LocalHarness, SfnHarness, SqsHarness

COMMON = ("budget_ms", "inline_limit", "duplicate_delivery", "virtual_sleep")


@pytest.mark.parametrize("harness", [Harness, SqsHarness, SfnHarness, LocalHarness])
def test_every_harness_takes_the_common_options(harness: type) -> None:
    params = inspect.signature(harness.__init__).parameters
    missing = [o for o in COMMON if o not in params and not (harness is LocalHarness and o == "inline_limit")]
    assert missing == [], f"{harness.__name__} lacks {missing}"


def sleepy() -> Workflow:
    wf = Workflow("sleepy")
    wf.step(name="nap", timeout_s=900)(lambda ctx, x: (time.sleep(600), {"slept": 600})[1])
    return wf


@pytest.mark.parametrize("harness", [Harness, SqsHarness])
def test_virtual_sleep_spends_virtual_time_on_each_harness(harness: type) -> None:
    with harness(sleepy(), virtual_sleep=True) as h:
        started_ms, wall = h.clock.now_ms(), time.monotonic()
        run_id = h.start("sleepy", {})
        assert h.run(run_id) == "SUCCEEDED"
        assert h.clock.now_ms() - started_ms >= 600_000 and time.monotonic() - wall < 60


def test_local_harness_is_real_time_only() -> None:
    with pytest.raises(ValueError, match="real time"):
        LocalHarness("x:y", virtual_sleep=True)
