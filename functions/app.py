"""The handlers of the deployed application (template.yaml, CodeUri ``functions/``): both example agents
behind one API, one sweeper and one set of step functions.

Each agent keeps its own code directory and handler module (``research_agent/app.py``,
``tool_agent/app.py``, for deploying one alone); here their packages are put on the import path and
every workflow is registered with every handler (the API starts runs of any of them, the control
function serves every wait and sleep, a step function may serve nodes of several workflows).
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _agent in ("tool_agent", "research_agent"):  # each agent's directory holds its package
    if str(_HERE / _agent) not in sys.path:
        sys.path.insert(0, str(_HERE / _agent))

from research_agent.workflow import wf as research_agent  # noqa: E402
from stepchain.runtimes.aws import api_handler as make_api_handler  # noqa: E402
from stepchain.runtimes.aws import step_handler as make_step_handler  # noqa: E402
from stepchain.runtimes.aws import sweeper_handler as make_sweeper_handler  # noqa: E402
from tool_agent.workflow import lookup as tool_lookup  # noqa: E402
from tool_agent.workflow import wf as tool_agent  # noqa: E402

WORKFLOWS = (research_agent, tool_agent, tool_lookup)
step_handler = make_step_handler(*WORKFLOWS)
api_handler = make_api_handler(*WORKFLOWS)
sweeper_handler = make_sweeper_handler(*WORKFLOWS)
