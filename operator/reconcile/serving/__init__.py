"""Serving a model (the Deployment kind): gate, revisions, traffic split, analysis, rollout steps.

Each policy is a small pure module; `operator/reconcile/deployment.py` composes them into one reconcile.
"""
