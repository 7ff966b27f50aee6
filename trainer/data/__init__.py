"""The Dataset workload: read, clean, filter, de-duplicate, scrub, split, tokenize, pack.

Entry point `llmops-data --config FILE` (the operator mounts FILE from the Dataset's spec).
"""
