"""The llmops.dev API: typed models, CRD generation and offline admission."""
