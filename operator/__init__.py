"""The llmops operator: Kopf handlers, pure reconcile logic, the API models and their CRDs.

Imported as `llmops.operator` (this folder is mapped in pyproject.toml so it never shadows the standard
library's `operator` module).
"""
