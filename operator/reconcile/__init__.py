"""Pure reconcile logic: from an observed resource and its children to desired children and status.

Nothing here talks to the API server; `llmops.operator.runtime.handlers` does the I/O around it.
"""
