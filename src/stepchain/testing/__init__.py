"""Test stepchain workflows the way stepchain tests itself: in-process, virtual time, injected crashes."""

from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.harness import Harness, InvocationLog, moto_aws
from stepchain.testing.probe import BOUNDARIES, HarnessProbe, InjectedCrash

__all__ = [
    "BOUNDARIES",
    "Harness",
    "HarnessProbe",
    "InjectedCrash",
    "InvocationLog",
    "InvocationTimeout",
    "VirtualClock",
    "VirtualLambdaContext",
    "moto_aws",
]
