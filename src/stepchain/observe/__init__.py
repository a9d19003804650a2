"""What a run cost and did: the ledger, the AWS requests it made and their prices, its timeline and
``stepchain show``."""
