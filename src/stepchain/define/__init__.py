"""Defining a workflow: its nodes and routes, a step's options, the context a step runs with and its
step-local operations (``ctx.each``, ``ctx.once``)."""
