"""Test stepchain workflows the way stepchain tests itself: in-process, virtual time, injected crashes."""

from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.harness import Harness, InvocationLog, moto_aws
from stepchain.testing.probe import API_BOUNDARIES, BOUNDARIES, WORKER_BOUNDARIES, HarnessProbe, InjectedCrash
from stepchain.testing.sfn_driver import SfnHarness
from stepchain.testing.sqs_driver import SqsHarness

__all__ = [
    "API_BOUNDARIES",
    "BOUNDARIES",
    "WORKER_BOUNDARIES",
    "Harness",
    "HarnessProbe",
    "InjectedCrash",
    "InvocationLog",
    "InvocationTimeout",
    "SfnHarness",
    "SqsHarness",
    "VirtualClock",
    "VirtualLambdaContext",
    "moto_aws",
]
