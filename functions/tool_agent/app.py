"""Lambda handlers of the tool agent (and of its delegate, the tool-lookup workflow): thin, all logic
lives in stepchain. The deployed template serves both example agents from ``functions/app.py``."""

from stepchain.runtimes.aws import api_handler as make_api_handler
from stepchain.runtimes.aws import step_handler as make_step_handler
from stepchain.runtimes.aws import sweeper_handler as make_sweeper_handler
from tool_agent.workflow import lookup, wf

step_handler = make_step_handler(wf, lookup)
api_handler = make_api_handler(wf, lookup)
sweeper_handler = make_sweeper_handler(wf, lookup)
