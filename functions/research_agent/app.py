"""Lambda handlers of the research agent (see template.yaml): thin, all logic lives in stepchain."""

from research_agent.workflow import wf
from stepchain.runtimes.aws import api_handler as make_api_handler
from stepchain.runtimes.aws import step_handler as make_step_handler
from stepchain.runtimes.aws import sweeper_handler as make_sweeper_handler

step_handler = make_step_handler(wf)
api_handler = make_api_handler(wf)
sweeper_handler = make_sweeper_handler(wf)
