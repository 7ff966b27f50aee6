"""Prometheus metrics of the operator. Names are part of the product: dashboards and alerts use them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    """One set of metrics per registry, so tests can use a fresh registry each."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "llmops_reconcile_total", "Reconciles by kind and outcome (success; retry: a conflict, throttle, "
            "server or connection error, retried with backoff; error: a write the API server refused, or a bug).",
            ["kind", "outcome"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "llmops_reconcile_duration_seconds", "Time spent in one reconcile.", ["kind"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.resources = Gauge(
            "llmops_resources", "Resources the operator sees, by kind and phase.", ["kind", "phase"],
            registry=self.registry)
        self.api_writes = Counter(
            "llmops_api_writes_total", "Writes the operator sent to the API server, by kind of write.", ["write"],
            registry=self.registry)
        self.rollouts = Counter(
            "llmops_rollout_events_total", "Deployment rollout events by reason (RolloutStarted, StepCompleted, "
            "Promoted, RolledBack, Aborted, RolloutFailed, GateFailed, AnalysisPassed, AnalysisFailed, "
            "AnalysisInconclusive).", ["reason"], registry=self.registry)
        self.canary_weight = Gauge(
            "llmops_canary_weight_percent", "Percent of a Deployment's traffic on its canary revision (0: none).",
            ["namespace", "name"], registry=self.registry)
        self.leader = Gauge(
            "llmops_leader", "1 while this replica holds the leader lease.", registry=self.registry)
