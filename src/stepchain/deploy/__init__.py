"""Deploying workflows: the state machines (ASL), the SAM template, ``stepchain new`` and
``stepchain deploy-local``."""
