"""The metric reads of a due canary check: Prometheus when configured, else a direct scrape of the ready pods.

Blocking (the Kopf layer runs it in a thread). Never raises on missing data: a revision that cannot be read gives
no window, and the pure analysis calls that check inconclusive.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1.common import seconds
from llmops.operator.api.v1alpha1.deployment import Deployment
from llmops.operator.reconcile.deployment import MetricsRead, pod_urls

from .metric_reader import PrometheusSource, ScrapeSource

log = logging.getLogger("llmops.operator.analysis")


class MetricReads:
    """One per operator: the scrape source keeps each pod's previous scrape, so its windows are per interval."""

    def __init__(self, prometheus_url: str | None):
        self.prometheus = PrometheusSource(prometheus_url) if prometheus_url else None
        self.scrape = ScrapeSource()
        self._started: set[tuple[str, str, str]] = set()
        """Revisions scraped once already: their next window differences against that first scrape."""

    def read(self, deployment: Deployment, children: dict[str, list[dict[str, Any]]],
             wanted: tuple[int, int | None], now: datetime) -> MetricsRead:
        revision, compare = wanted
        meta, spec = deployment.metadata, deployment.spec
        if self.prometheus is not None:
            analysis = spec.canary.analysis if spec.canary else None
            interval = seconds(analysis.interval) if analysis else 60.0

            def window(rev: int) -> Any:
                return self.prometheus.window(meta.namespace or "", meta.name, str(rev), interval,
                                              spec.server.runtime)

            return MetricsRead(window(revision), window(compare) if compare is not None else None, "prometheus")
        port, namespace = spec.server.port, meta.namespace or ""
        key = (namespace, meta.name, str(revision))
        baseline = key not in self._started
        self._started.add(key)
        runtime = spec.server.runtime
        canary = self.scrape.window(key, pod_urls(children, revision, port), runtime)
        stable = None
        if compare is not None:
            stable_key = (namespace, meta.name, str(compare))
            self._started.add(stable_key)
            stable = self.scrape.window(stable_key, pod_urls(children, compare, port), runtime)
        return MetricsRead(canary, stable, "scrape", baseline=baseline)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Deployment: its revisions start from a new baseline if it comes back."""
        self._started = {key for key in self._started if key[:2] != (namespace, name)}
        self.scrape.forget(namespace, name)
