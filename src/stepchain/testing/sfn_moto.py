"""How :class:`~stepchain.testing.sfn_driver.SfnHarness` patches moto.

What it patches (moto internals, pinned to moto 5.2.5; :func:`seams` lists them and a canary test
checks that they still exist):

* ``LambdaFunction._invoke_lambda``: runs the handler in-process. An injected crash or a virtual
  timeout comes back to Step Functions as a failed invocation (``Runtime.ExitError``,
  ``Sandbox.Timedout``), so the task's Retry re-invokes; after a crash the virtual clock moves
  past the dead invocation's lease (its budget + the engine's 2 s grace) so the retry takes over.
* ``WaitFunction._wait_interval``, ``Timestamp._get_wait_seconds`` and the retrier's ``time``:
  Wait states and Retry intervals move the virtual clock instead of sleeping.
* Event deadlines: :meth:`SfnHarness.advance` times out the callback of every wait whose deadline
  passed in virtual time (moto would wait in real time), which raises ``States.Timeout``.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC
from typing import Any, Protocol
from unittest import mock

from stepchain.testing.harness import moto_aws

#: ``mock_aws`` configuration under which moto really executes state machines
SFN_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}}


def moto_sfn() -> AbstractContextManager[None]:
    """moto with Step Functions executing (and the environment mock_aws needs)."""
    return moto_aws(SFN_CONFIG)


class MotoHost(Protocol):
    """What the patches call back: the harness serving invocations and owning the virtual clock."""

    def pass_time(self, ms: float) -> None: ...

    def pass_time_to(self, at_ms: int) -> None: ...

    def _invoke(self, function: str, event: dict[str, Any]) -> tuple[str, bool, str]: ...


def seams() -> dict[str, Any]:
    """The moto internals this driver patches (name -> the object that must have them)."""
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcomeTimedOut
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    return {
        "LambdaFunction._invoke_lambda": getattr(LambdaFunction, "_invoke_lambda", None),
        "WaitFunction._wait_interval": getattr(WaitFunction, "_wait_interval", None),
        "Timestamp._get_wait_seconds": getattr(Timestamp, "_get_wait_seconds", None),
        "Timestamp._from_timestamp_string": getattr(Timestamp, "_from_timestamp_string", None),
        "retrier_decl.time.sleep": getattr(getattr(retrier_decl, "time", None), "sleep", None),
        "CallbackOutcomeTimedOut": CallbackOutcomeTimedOut,
        "stepfunctions_parser_backends": stepfunctions_parser_backends,
    }


def lambda_zip() -> bytes:
    """The code of the moto functions (never run: invocations are served in-process)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    raise RuntimeError('served in-process')\n")
    return buf.getvalue()


class _VirtualTime:
    """Stands in for the ``time`` module in moto's retrier: sleeping moves the virtual clock."""

    def __init__(self, harness: MotoHost) -> None:
        self._h = harness

    def sleep(self, seconds: float) -> None:
        self._h.pass_time(seconds * 1000)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch_moto(stack: ExitStack, harness: MotoHost) -> None:
    """Patch moto (for the life of ``stack``): Lambda invocations go to ``harness``, Wait states and
    Retry intervals move its virtual clock."""
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    original_wait_seconds = Timestamp._get_wait_seconds

    def invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else (event or {})
        return harness._invoke(str(fn.function_name), payload)

    def wait_seconds(ts: Any, env: Any) -> int:
        ts.string.eval(env=env)
        stamp = env.stack.pop()
        when = Timestamp._from_timestamp_string(stamp) if isinstance(stamp, str) else None
        if when is None:
            return int(original_wait_seconds(ts, env))  # raises moto's own failure event
        harness.pass_time_to(int(when.replace(tzinfo=UTC).timestamp() * 1000))
        return 0

    def wait_interval(wf: Any, env: Any, wait_seconds: int) -> None:
        harness.pass_time(max(0, wait_seconds) * 1000)

    stack.enter_context(mock.patch.object(LambdaFunction, "_invoke_lambda", invoke_lambda))
    stack.enter_context(mock.patch.object(Timestamp, "_get_wait_seconds", wait_seconds))
    stack.enter_context(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
    stack.enter_context(mock.patch.object(retrier_decl, "time", _VirtualTime(harness)))


__all__ = ["SFN_CONFIG", "MotoHost", "lambda_zip", "moto_sfn", "patch_moto", "seams"]


def time_out_callback(token: str, *, wait_s: float = 10.0) -> bool:
    """End the callback wait of ``token`` with a timeout (``States.Timeout`` in its task); False
    when no running execution has it. The wait's task stores its token before moto's thread
    registers the callback: on a loaded machine that registration can still be on its way, so
    this retries for ``wait_s`` real seconds."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcomeTimedOut
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    backend = stepfunctions_parser_backends["123456789012"]["us-east-1"]
    deadline = time.monotonic() + wait_s
    while True:
        for execution in backend._get_executions(ExecutionStatus.RUNNING):
            if execution.exec_worker.env.callback_pool_manager.notify(
                callback_id=token, outcome=CallbackOutcomeTimedOut(callback_id=token)
            ):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
