"""A tool-using agent on stepchain: an offline model picks tools (corpus search, a calculator, e-mail)
in a loop until it answers; e-mail needs a human's approval; one fact lookup is delegated to a child
workflow. Shares no code with the research agent (functions/research_agent)."""
