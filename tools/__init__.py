"""Developer tools run from the Makefile (e.g. tools/local_invoke.py)."""
