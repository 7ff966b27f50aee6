"""The model server: an OpenAI-compatible HTTP API over a continuously batched engine."""
