"""stepchain."""
