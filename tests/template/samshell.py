"""Paths and helpers shared by the tests of the SAM application shell (template.yaml and its tooling)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LOCAL_INVOKE = ROOT / "tools" / "local_invoke.py"
RESEARCH_FUNCTIONS = ("PlanFunction", "FetchFunction", "SummarizeFunction", "CrossrefFunction", "DraftFunction")
#: the tool agent's steps, and those of its delegate (the tool-lookup workflow)
TOOL_FUNCTIONS = ("ToolAgentFunction", "ToolLookupFunction")
STEP_FUNCTIONS = (*RESEARCH_FUNCTIONS, *TOOL_FUNCTIONS)
ALL_FUNCTIONS = (*STEP_FUNCTIONS, "ControlFunction", "ApiFunction", "SweeperFunction")


def sam_env() -> dict[str, str]:
    """Environment for SAM CLI runs: no telemetry, a region (sam validate/build need one)."""
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
