"""Reading the model servers' metrics for a canary check: a direct scrape of the pods, or the Prometheus HTTP API.

Blocking I/O (the Kopf layer runs it in a thread); every decision about the numbers lives in the pure
reconcile/serving/samples.py, so both sources count the same way. Neither raises on missing or unreachable
data: a pod that cannot be scraped is skipped and named in a log line, a Prometheus that cannot be queried gives
no window, and a series that does not exist gives a None field. The analysis calls such a check inconclusive.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from llmops.operator.api.v1alpha1.deployment import Runtime
from llmops.operator.reconcile.serving import samples
from llmops.operator.reconcile.serving.samples import GENERATION_ROUTES, MetricNames, Snapshot, Window

log = logging.getLogger("llmops.operator.analysis")

MAX_EXPOSITION_BYTES = 16 * 1024 * 1024
"""A /metrics answer larger than this is refused: a model server exports a few hundred series, not megabytes."""
ACCEPT = "text/plain;version=0.0.4"
"""The classic text format (servers that can also speak OpenMetrics or protobuf answer in it when asked so)."""

Key = tuple[str, str, str]
"""(namespace, Deployment name, revision)."""


def metrics_url(url: str) -> str:
    """A pod's base URL (http://10.1.2.3:8000) to its metrics URL; a URL already ending in /metrics is kept."""
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


def scrape(url: str, timeout: float = 5.0, runtime: Runtime | None = None) -> Snapshot:
    """One scrape of one server's /metrics (`url`: its base URL or its metrics URL). Raises OSError or
    ValueError when the server cannot be read or its answer is no exposition."""
    request = urllib.request.Request(metrics_url(url), headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(MAX_EXPOSITION_BYTES + 1)
    if len(body) > MAX_EXPOSITION_BYTES:
        raise ValueError(f"the exposition exceeds {MAX_EXPOSITION_BYTES} bytes")
    return samples.parse(body.decode("utf-8"), runtime)


class ScrapeSource:
    """Windows from scraping each ready pod of a revision once per check, without Prometheus.

    Keeps, per (namespace, deployment, revision), each pod's scrape of the previous check; a window is the sum over
    pods of each pod's increase since its own previous scrape. A pod seen for the first time is only a baseline
    (whether it started before or after the previous check cannot be known, so counting its totals could count
    another interval's requests). A pod that restarted counts from zero."""

    def __init__(self, timeout: float = 5.0, parallel: int = 8):
        self.timeout, self.parallel = timeout, parallel
        self._previous: dict[Key, dict[str, Snapshot]] = {}
        self._lock = threading.Lock()

    def window(self, key: Key, pod_urls: Sequence[str], runtime: Runtime | None = None) -> Window | None:
        """The revision's window since the previous call; None on the first call for `key` (a baseline only) or
        when no pod scraped now was scraped then. `runtime` None: read from each exposition."""
        scraped = self._scrape_all(key, pod_urls, runtime)
        with self._lock:
            previous = self._previous.get(key)
            self._previous[key] = scraped  # pods gone or unreadable now start from a new baseline
        if previous is None:
            return None
        increases = {url: samples.difference(previous[url], now) for url, now in scraped.items() if url in previous}
        merged = samples.merge(self._one_runtime(key, increases))
        return samples.window(merged) if merged is not None else None

    @staticmethod
    def _one_runtime(key: Key, increases: dict[str, Snapshot]) -> list[Snapshot]:
        """The increases of the pods that expose what most of the revision's pods do (read without a runtime,
        a pod whose exposition looks like another server's is left out, and said so, rather than mixed in)."""
        if not increases:
            return []
        usual = Counter(i.names for i in increases.values()).most_common(1)[0][0]
        for url in (url for url, i in increases.items() if i.names != usual):
            log.warning("canary analysis of %s/%s revision %s: skipped pod %s, its metrics are not those of the "
                        "revision's other pods", *key, url)
        return [i for i in increases.values() if i.names == usual]

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Deployment: drop its revisions' baselines."""
        with self._lock:
            for key in [k for k in self._previous if k[:2] == (namespace, name)]:
                del self._previous[key]

    def _scrape_all(self, key: Key, pod_urls: Sequence[str], runtime: Runtime | None) -> dict[str, Snapshot]:
        if not pod_urls:
            return {}

        def one(url: str) -> tuple[str, Snapshot | None]:
            try:
                return url, scrape(url, self.timeout, runtime)
            except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
                log.warning("canary analysis of %s/%s revision %s: skipped pod %s, its metrics could not be "
                            "read: %s", *key, url, error)
                return url, None

        with ThreadPoolExecutor(max_workers=min(self.parallel, len(pod_urls))) as pool:
            results = list(pool.map(one, pod_urls))
        return {url: snapshot for url, snapshot in results if snapshot is not None}


class PrometheusError(Exception):
    """Prometheus could not answer a query."""


class PrometheusSource:
    """Windows from the Prometheus HTTP API, over series labelled namespace, deployment and revision (the chart's
    PodMonitor relabels the pods' llmops.dev/name and llmops.dev/revision labels to those).

    The interval should span a few scrapes (the PodMonitor's 15s against the analysis' 1m by default): increase()
    and rate() need two samples in it, and they extrapolate each series from its first and last sample to the
    range's ends, so counts come out fractional and a little high (rounded in the window), and with few
    observations a p99 can move by a bucket. Ratios (the error rate) and quantiles are scale-free, so a check's
    verdict barely depends on it."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def window(self, namespace: str, deployment: str, revision: str, interval_seconds: float,
               runtime: Runtime = Runtime.LLMOPS, at: datetime | None = None) -> Window | None:
        """The revision's window over the `interval_seconds` up to `at` (default: Prometheus' now); None when
        Prometheus cannot be queried."""
        queries = Queries(samples.names_for(runtime), selector(namespace, deployment, revision), interval_seconds)
        when = at.timestamp() if at is not None else None
        try:
            requests = self.scalar(queries.requests(), when)
            errors = self.scalar(queries.errors(), when) if requests is not None else None
            if requests is not None and errors is None:
                errors = 0.0  # no 5xx series yet: none happened
            if requests is None and queries.names.finished:
                requests = self.scalar(queries.finished(), when)  # errors stay unknown
            ttft, tpot, latency = (self.first(queries.p99(names, by_route), when)
                                   for names, by_route in queries.histograms())
        except PrometheusError as error:
            log.warning("canary analysis of %s/%s revision %s: Prometheus at %s could not be queried: %s",
                        namespace, deployment, revision, self.base_url, error)
            return None
        return Window.measured(requests, errors, ttft, tpot, latency)

    def first(self, alternatives: list[str], at: float | None = None) -> float | None:
        """The value of the first query whose series exist (a histogram name this server exports)."""
        for query in alternatives:
            result = self.query(query, at)
            if result:
                return _number(result[0]["value"][1])
        return None

    def scalar(self, query: str, at: float | None = None) -> float | None:
        """A query that sums to one sample; None for an empty result (no such series) or NaN (0/0)."""
        result = self.query(query, at)
        return _number(result[0]["value"][1]) if result else None

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """An instant query at `at` (Unix seconds; default now): the result vector."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422/503 carry a JSON body that says why
            raise PrometheusError(_error_of(error)) from None
        except (OSError, ValueError) as error:
            raise PrometheusError(str(error)) from None
        if answer.get("status") != "success" or answer.get("data", {}).get("resultType") != "vector":
            raise PrometheusError(f"unexpected answer to {promql}: {str(answer)[:300]}")
        return answer["data"]["result"]


class Queries:
    """The PromQL of one revision's window: increase() of the request counters over the interval and
    histogram_quantile(0.99, sum by (le) (rate(..._bucket[interval]))) for each latency."""

    def __init__(self, names: MetricNames, selector: str, interval_seconds: float):
        self.names, self.selector = names, selector
        self.range = f"{max(1, round(interval_seconds * 1000))}ms"
        self.routes = f'{names.route_label}=~"{"|".join(sorted(GENERATION_ROUTES))}"'

    def requests(self) -> str:
        return f"sum(increase({self.names.requests}{{{self.selector},{self.routes}}}[{self.range}]))"

    def errors(self) -> str:
        server_error = f'{self.names.status_label}=~"5.."'  # "503", or "5xx" where statuses are grouped
        return f"sum(increase({self.names.requests}{{{self.selector},{self.routes},{server_error}}}[{self.range}]))"

    def finished(self) -> str:
        return f"sum(increase({self.names.finished}{{{self.selector}}}[{self.range}]))"

    def histograms(self) -> list[tuple[tuple[str, ...], bool]]:
        names = self.names
        return [(names.ttft, False), (names.tpot, False), (names.latency, names.latency_by_route)]

    def p99(self, names: tuple[str, ...], by_route: bool) -> list[str]:
        where = f"{self.selector},{self.routes}" if by_route else self.selector
        return [f"histogram_quantile(0.99, sum by (le) (rate({name}_bucket{{{where}}}[{self.range}])))"
                for name in names]


def selector(namespace: str, deployment: str, revision: str) -> str:
    """The label matchers of one revision's series."""
    return ",".join(f'{label}="{_quoted(value)}"' for label, value in
                    (("namespace", namespace), ("deployment", deployment), ("revision", revision)))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value


def _error_of(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read().decode() or "{}")
    except (OSError, ValueError):
        body = {}
    return f"HTTP {error.code}: {body.get('error') or error.reason}"
