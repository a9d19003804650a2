"""Lambda handlers of the fusion bench app (bench/fusion_localstack.py): both chains behind one API,
one sweeper and one worker function."""

from chains import fused, plain

from stepchain.runtimes.aws import api_handler as make_api_handler
from stepchain.runtimes.aws import step_handler as make_step_handler
from stepchain.runtimes.aws import sweeper_handler as make_sweeper_handler

step_handler = make_step_handler(fused, plain)
api_handler = make_api_handler(fused, plain)
sweeper_handler = make_sweeper_handler(fused, plain)
