"""Both metric sources of canary analysis against REAL servers: two `llmops-serve` processes (a stable that batches
8 sequences and a canary that decodes one at a time, so queued requests wait for their first token) and a REAL
Prometheus scraping them every second, labelled by the chart's own PodMonitor relabelings.

What must hold:
- a direct scrape (ScrapeSource) counts exactly the generation requests sent (4xx included, other routes not), and
  its p99s lie in the histogram buckets of what the clients measured;
- Prometheus (PrometheusSource) gives the same windows, within what increase() extrapolation and bucket
  interpolation allow, and its own histogram_quantile equals ours on the same buckets;
- the slower canary has the higher TTFT p99, and a check against the stable fails it for that;
- an unreachable pod is skipped, a new pod is only a baseline, a missing series is no data, never an exception.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from llmops.operator.api.v1alpha1.deployment import AnalysisCheck, CanaryAnalysis, MetricCheck, Runtime, Verdict
from llmops.operator.reconcile.serving import analysis, samples
from llmops.operator.reconcile.serving.samples import GENERATION_ROUTES, Window
from llmops.operator.runtime.metric_reader import PrometheusSource, ScrapeSource, scrape
from llmops.trainer.serve.metrics import LATENCY_BUCKETS, TOKEN_BUCKETS
from tests.integration.conftest import BIN, free_port, wait_until
from tests.integration.test_helm import only, render

pytestmark = pytest.mark.slow

NAMESPACE, DEPLOYMENT, MODEL = "team", "chat", "tiny"
FAST, SLOW = "1", "2"
"""Revisions: the stable, batching 8 sequences, and a canary that decodes one sequence at a time."""
BURST = 8
"""Streamed completions sent at once: the slow server makes the k-th wait for k-1 whole generations."""
SCRAPE_SECONDS = 1.0
CLIENT_SLACK = 0.1
"""Seconds a client's measurement may exceed the server's (connection, parsing, a busy 2-core machine)."""
PROMPT = "To be, or not to be, that is the question"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        pytest.fail("no prometheus binary: `make test` installs Debian's package with hack/install-prometheus.sh "
                    "(run it as root, or install a Prometheus 2.x on PATH)")
    return found


class Process:
    """A child process with its log, killed at the end whatever happened."""

    def __init__(self, command: list[str], log: Path):
        self.log = log
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Server(Process):
    def __init__(self, model: Path, tmp: Path, name: str, batch: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"servedModelName": MODEL, "drainSeconds": 0, "limits": {
            "maxPromptTokens": 64, "maxNewTokens": 48, "maxConcurrentRequests": 32, "maxBatchSize": batch}}))
        super().__init__([str(BIN / "llmops-serve"), "--model", str(model), "--config", str(config), "--host",
                          "127.0.0.1", "--port", str(self.port)], tmp / f"{name}.log")

    def ready(self) -> bool:
        self.alive()
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


class Prometheus(Process):
    """A real Prometheus scraping the servers as the chart's PodMonitor would have it scrape their pods."""

    def __init__(self, binary: str, tmp: Path, targets: dict[str, Server]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(targets)))
        super().__init__([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                         tmp / "prometheus.log")

    def ready(self) -> bool:
        self.alive()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def result(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.result(promql)
        return float(result[0]["value"][1]) if result else None

    def scrape_times(self, revision: str, flat: float) -> tuple[float, float]:
        """(the last scrape of `revision` before its traffic, its latest scrape), as Prometheus stamped them.

        A request's first token is observed before anything else about it is counted, so the last scrape before
        the traffic is the last one where the TTFT count still stood at `flat`."""
        series = f"llmops_serve_time_to_first_token_seconds_count{{{selector(revision, False)}}}[2m]"
        ((values,),) = [[r["values"]] for r in self.result(series)]
        stamps = [(float(t), float(v)) for t, v in values]
        return max(t for t, v in stamps if v == flat), stamps[-1][0]


def scrape_config(targets: dict[str, Server]) -> dict:
    """Static targets carrying the discovery labels Kubernetes SD would give the revision's pods, relabelled by the
    chart's PodMonitor rules (and `namespace`, which the Prometheus Operator adds itself)."""
    (endpoint,) = only(render("serverMetrics.podMonitor.enabled=true"), "PodMonitor")["spec"]["podMetricsEndpoints"]
    relabel = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}]
    relabel += [{"action": r["action"], "source_labels": r["sourceLabels"], "target_label": r["targetLabel"]}
                for r in endpoint["relabelings"]]
    static = [{"targets": [f"127.0.0.1:{server.port}"], "labels": {
        "__meta_kubernetes_namespace": NAMESPACE, "__meta_kubernetes_pod_label_llmops_dev_name": DEPLOYMENT,
        "__meta_kubernetes_pod_label_llmops_dev_revision": revision}} for revision, server in targets.items()]
    return {"global": {"scrape_interval": f"{SCRAPE_SECONDS:g}s", "scrape_timeout": f"{SCRAPE_SECONDS:g}s"},
            "scrape_configs": [{"job_name": "model-servers", "metrics_path": endpoint["path"],
                                "static_configs": static, "relabel_configs": relabel}]}


# --- Traffic ----------------------------------------------------------------------------------------------------

@dataclass
class Sent:
    """What the clients sent one server and measured."""

    generation: int = 0
    """Requests to the generation routes (4xx included)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending to the last byte, per generation request answered 200."""
    first_chunks: list[float] = field(default_factory=list)
    """Seconds from sending to the first streamed chunk, per streamed completion."""
    token_gaps: list[float] = field(default_factory=list)
    """Mean seconds between a streamed completion's chunks after the first (one token each: ignore_eos)."""


CLIENT = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=2 * BURST))
"""One client for every request: a fresh one per request would spend more time building its TLS context than the
server spends on a first token, and the clients' clocks would run ahead of the server's."""


def completion(url: str, sent: Sent, streamed: bool, model: str = MODEL) -> None:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True,
            "stream": streamed}
    started, chunks = time.monotonic(), []
    with CLIENT.stream("POST", f"{url}/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if streamed and line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(time.monotonic() - started)
        status = response.status_code
    sent.generation += 1
    if chunks:
        sent.first_chunks.append(chunks[0])
        sent.token_gaps.append((chunks[-1] - chunks[0]) / (len(chunks) - 1))
    if status == 200:
        sent.latencies.append(time.monotonic() - started)
    else:
        assert status == 404 and model != MODEL, status


def chat(url: str, sent: Sent, streamed: bool) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24,
            "temperature": 0, "ignore_eos": True, "stream": streamed}
    started = time.monotonic()
    with CLIENT.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.read()
        assert response.status_code == 200, response.text
    sent.generation += 1
    sent.latencies.append(time.monotonic() - started)


def workload(url: str) -> Sent:
    """18 generation requests (8 streamed completions at once, 4 plain ones, 4 chats, 2 for a wrong model: 404,
    a request but the client's fault), plus 5 requests to other routes that must not count."""
    sent = Sent()
    bursts = [Sent() for _ in range(BURST)]
    with ThreadPoolExecutor(BURST) as pool:
        list(pool.map(lambda s: completion(url, s, streamed=True), bursts))
    for each in bursts:
        sent.generation += each.generation
        sent.latencies += each.latencies
        sent.first_chunks += each.first_chunks
        sent.token_gaps += each.token_gaps
    for _ in range(4):
        completion(url, sent, streamed=False)
    for streamed in (False, False, True, True):
        chat(url, sent, streamed)
    for _ in range(2):
        completion(url, sent, streamed=False, model="no-such-model")
    for path in ("/v1/models", "/v1/models", "/v1/models", "/healthz", "/healthz"):
        assert CLIENT.get(f"{url}{path}").status_code == 200
    return sent


WARM_UP_TOKENS = 2
"""Generations of the warm-up that reach a first token (the 404 does not)."""


def warm_up(url: str) -> None:
    """One request of each route and code the workload uses, so every series exists before the window opens."""
    throwaway = Sent()
    completion(url, throwaway, streamed=False)
    completion(url, throwaway, streamed=False, model="no-such-model")
    chat(url, throwaway, streamed=False)


# --- The scenario, run once for the module -----------------------------------------------------------------------

@dataclass
class Scenario:
    servers: dict[str, Server]
    prometheus: Prometheus
    sent: dict[str, Sent]
    scraped: dict[str, Window | None]
    """ScrapeSource's windows: from the baseline scrape before the traffic to a scrape after it."""
    queried: dict[str, Window | None]
    """PrometheusSource's windows over exactly the scrapes before and after the traffic (no extrapolation)."""
    recent: dict[str, Window | None]
    """PrometheusSource's windows as the operator asks: the last `range_seconds` up to now."""
    range_seconds: float


def key(revision: str) -> tuple[str, str, str]:
    return NAMESPACE, DEPLOYMENT, revision


def selector(revision: str, generation: bool = True) -> str:
    """PromQL matchers of one revision's series (of the generation routes only, for the route-labelled ones)."""
    out = f'namespace="{NAMESPACE}",deployment="{DEPLOYMENT}",revision="{revision}"'
    return out + f',route=~"{"|".join(sorted(GENERATION_ROUTES))}"' if generation else out


def settled(scenario: Scenario, revision: str) -> None:
    """Wait until Prometheus' latest samples are what the server exports now (no traffic meanwhile)."""
    def same() -> bool:
        now = samples.parse(httpx.get(f"{scenario.servers[revision].url}/metrics", timeout=5).text)
        requests = samples.window(now).requests
        count = samples.buckets(now, ("llmops_serve_time_to_first_token_seconds",))[-1][1]
        return (scenario.prometheus.value(f"sum(llmops_serve_requests_total{{{selector(revision)}}})") == requests
                and scenario.prometheus.value("sum(llmops_serve_time_to_first_token_seconds_count"
                                              f"{{{selector(revision, False)}}})") == count)

    wait_until(f"prometheus to catch up with revision {revision}", same)


@pytest.fixture(scope="module")
def scenario(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    binary = prometheus_binary()
    tmp = tmp_path_factory.mktemp("analysis")
    started: list[Process] = []
    try:
        servers = {FAST: Server(base_model, tmp, "fast", batch=8), SLOW: Server(base_model, tmp, "slow", batch=1)}
        started += servers.values()
        prometheus = Prometheus(binary, tmp, servers)
        started.append(prometheus)
        for revision, server in servers.items():
            wait_until(f"server of revision {revision}", server.ready, timeout=90)
        wait_until("prometheus", prometheus.ready, timeout=30)
        for server in servers.values():
            warm_up(server.url)
        for revision in servers:  # Prometheus has seen the warm-up: 3 generation requests per server
            wait_until(f"prometheus to scrape revision {revision}",
                       lambda r=revision: prometheus.value(f"sum(llmops_serve_requests_total{{{selector(r)}}})") == 3)
        time.sleep(3 * SCRAPE_SECONDS)  # the window's range starts after every series exists, at flat values

        source = ScrapeSource()
        for revision, server in servers.items():
            assert source.window(key(revision), [server.url]) is None, "the first scrape is a baseline"
        opened = time.monotonic()
        sent = {revision: workload(server.url) for revision, server in servers.items()}
        for revision in servers:
            want = 3 + sent[revision].generation
            wait_until(f"prometheus to scrape revision {revision}'s traffic",
                       lambda r=revision, w=want: prometheus.value(
                           f"sum(llmops_serve_requests_total{{{selector(r)}}})") == w)
        scraped = {revision: source.window(key(revision), [server.url]) for revision, server in servers.items()}
        range_seconds = math.ceil(time.monotonic() - opened + 2 * SCRAPE_SECONDS)
        reader = PrometheusSource(prometheus.url)
        recent = {revision: reader.window(NAMESPACE, DEPLOYMENT, revision, range_seconds, Runtime.LLMOPS)
                  for revision in servers}
        queried = {}
        for revision in servers:
            # A range from one scrape to another, evaluated at the second: increase() then has nothing to
            # extrapolate (PromQL 2.x ranges include their start), so it must count exactly what was scraped.
            first, last = prometheus.scrape_times(revision, flat=WARM_UP_TOKENS)
            queried[revision] = reader.window(NAMESPACE, DEPLOYMENT, revision, last - first, Runtime.LLMOPS,
                                              at=datetime.fromtimestamp(last, UTC))
        yield Scenario(servers, prometheus, sent, scraped, queried, recent, range_seconds)
    finally:
        for process in started:
            process.stop()
        CLIENT.close()


def bucket_of(value: float, bounds: tuple[float, ...]) -> tuple[float, float]:
    """The (lower, upper] bucket of `bounds` holding `value` (upper +Inf past the last)."""
    lower = 0.0
    for upper in bounds:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def overlaps(p99_ms: float, bounds: tuple[float, ...], low: float, high: float) -> bool:
    """The bucket holding the interpolated p99 meets [low, high] (seconds): the p99 is right to bucket resolution."""
    lower, upper = bucket_of(p99_ms / 1000, bounds)
    return lower <= high and upper >= low


# --- (a) the direct scrape ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("revision", [FAST, SLOW])
def test_scrape_counts_exactly_the_generation_requests_sent(scenario: Scenario, revision: str) -> None:
    window = scenario.scraped[revision]
    assert window is not None
    assert scenario.sent[revision].generation == 18
    assert (window.requests, window.errors, window.error_rate) == (18, 0, 0.0)


@pytest.mark.parametrize("revision", [FAST, SLOW])
def test_scrape_p99s_lie_in_the_buckets_of_what_clients_measured(scenario: Scenario, revision: str) -> None:
    window, sent = scenario.scraped[revision], scenario.sent[revision]
    assert window is not None and window.ttft_p99_ms and window.tpot_p99_ms and window.latency_p99_ms
    # The p99 of the 18 (16 answered, 2 quick 404s) is in the bucket of the slowest; its client saw it a bit later.
    slowest = max(sent.latencies)
    assert overlaps(window.latency_p99_ms, LATENCY_BUCKETS, slowest - CLIENT_SLACK, slowest), (window, slowest)
    # The slowest first token: at least the slowest streamed first chunk (less slack), at most the slowest answer.
    assert overlaps(window.ttft_p99_ms, LATENCY_BUCKETS, max(sent.first_chunks) - CLIENT_SLACK, slowest), window
    # Per output token: at least the slowest streamed completion's gaps as its client saw them (a final chunk
    # without a token may shorten the client's mean a little), and below the whole latency.
    assert overlaps(window.tpot_p99_ms, TOKEN_BUCKETS, 0.75 * max(sent.token_gaps), math.inf), (window, sent)
    assert window.tpot_p99_ms < window.latency_p99_ms


# --- (b) Prometheus ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("revision", [FAST, SLOW])
def test_prometheus_window_equals_the_direct_scrape(scenario: Scenario, revision: str) -> None:
    """Over the same scrapes, the PromQL of PrometheusSource and the differences of ScrapeSource agree exactly."""
    direct, queried = scenario.scraped[revision], scenario.queried[revision]
    assert direct is not None and queried is not None
    assert (queried.requests, queried.errors, queried.error_rate) == (direct.requests, direct.errors, 0.0)
    assert direct.requests == 18
    for name in ("ttft_p99_ms", "tpot_p99_ms", "latency_p99_ms"):
        assert getattr(queried, name) == pytest.approx(getattr(direct, name), rel=1e-9), name


@pytest.mark.parametrize("revision", [FAST, SLOW])
def test_prometheus_up_to_now_extrapolates_within_a_scrape_interval_at_each_end(scenario: Scenario,
                                                                              revision: str) -> None:
    direct, recent = scenario.scraped[revision], scenario.recent[revision]
    assert direct is not None and recent is not None
    stretch = scenario.range_seconds / (scenario.range_seconds - 2 * SCRAPE_SECONDS)
    assert direct.requests <= recent.requests <= math.ceil(direct.requests * stretch), (direct, recent)
    assert (recent.errors, recent.error_rate) == (0, 0.0)
    # Each bucket series is extrapolated on its own (one that began the range at 0 is not stretched back to the
    # range's start), so the p99s move, by a bucket or more with so few observations; they stay finite numbers.
    assert all(getattr(recent, name) for name in ("ttft_p99_ms", "tpot_p99_ms", "latency_p99_ms")), recent


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 1.0])
def test_our_histogram_quantile_equals_prometheus_on_the_same_buckets(scenario: Scenario, q: float) -> None:
    """Without traffic the counters stand still: Prometheus' latest samples are the buckets we scrape now, and its
    histogram_quantile over them (no rate, no extrapolation) must equal ours."""
    histograms = (("llmops_serve_time_to_first_token_seconds", False),
                  ("llmops_serve_time_per_output_token_seconds", False),
                  ("llmops_serve_request_duration_seconds", True))
    for revision, server in scenario.servers.items():
        settled(scenario, revision)
        snapshot = scrape(server.url)
        for base, by_route in histograms:
            where = (lambda labels: samples.is_generation(labels, "route")) if by_route else None
            ours = samples.histogram_quantile(q, samples.buckets(snapshot, (base,), where))
            promql = f"histogram_quantile({q}, sum by (le) ({base}_bucket{{{selector(revision, by_route)}}}))"
            assert ours == pytest.approx(scenario.prometheus.value(promql), rel=1e-12), (revision, base, q)


def test_prometheus_empty_results_are_no_data_and_an_unreachable_one_no_window(scenario: Scenario) -> None:
    reader = PrometheusSource(scenario.prometheus.url)
    assert reader.window(NAMESPACE, DEPLOYMENT, "99", 60, Runtime.LLMOPS) == Window()
    assert reader.window(NAMESPACE, DEPLOYMENT, FAST, 60, Runtime.VLLM) == Window()  # no vLLM series here
    assert PrometheusSource(f"http://127.0.0.1:{free_port()}").window(NAMESPACE, DEPLOYMENT, FAST, 60) is None


# --- The slower canary ---------------------------------------------------------------------------------------------

def test_the_slower_server_has_the_higher_ttft_p99_and_fails_against_the_stable(scenario: Scenario) -> None:
    fast, slow = scenario.scraped[FAST], scenario.scraped[SLOW]
    assert fast is not None and slow is not None and fast.ttft_p99_ms and slow.ttft_p99_ms
    assert slow.ttft_p99_ms > 2 * fast.ttft_p99_ms, (fast, slow)
    spec = CanaryAnalysis.model_validate({"minRequests": 10, "compareToStable": {"latencyTolerance": 0.5}})
    now = datetime.now(UTC)
    for source, canary, stable in (("scrape", slow, fast), ("prometheus", scenario.queried[SLOW],
                                                           scenario.queried[FAST])):
        judged = analysis.check(spec, canary, stable, now, source)
        assert judged.verdict is Verdict.FAILED, judged
        assert ttft(judged).passed is False and "ttftP99Ms" in judged.message, judged
    # The other way round the first token is no worse. (Batching 8 costs time per output token, which the same
    # check sees: tpotP99Ms is the fast server's trade-off, judged on its own.)
    assert ttft(analysis.check(spec, fast, slow, now, "scrape")).passed is True


def ttft(judged: AnalysisCheck) -> MetricCheck:
    (found,) = [m for m in judged.metrics if m.metric == "ttftP99Ms"]
    return found


# --- Pods coming and going -----------------------------------------------------------------------------------------

def test_an_unreachable_pod_is_skipped_and_named(scenario: Scenario, caplog: pytest.LogCaptureFixture) -> None:
    server, dead = scenario.servers[FAST], f"http://127.0.0.1:{free_port()}"
    source = ScrapeSource(timeout=2)
    with caplog.at_level(logging.WARNING, logger="llmops.operator.analysis"):
        assert source.window(key("x"), [server.url, dead]) is None
        sent = Sent()
        for streamed in (False, True, False):
            completion(server.url, sent, streamed)
        window = source.window(key("x"), [dead, server.url])
    assert window is not None and window.requests == 3
    assert sum(dead in record.getMessage() for record in caplog.records) == 2


def test_a_pod_seen_for_the_first_time_is_only_a_baseline(scenario: Scenario) -> None:
    fast, slow = scenario.servers[FAST], scenario.servers[SLOW]
    source = ScrapeSource()
    assert source.window(key("y"), [fast.url]) is None
    sent = Sent()
    for url in (fast.url, fast.url, slow.url):
        completion(url, sent, streamed=False)
    window = source.window(key("y"), [fast.url, slow.url])  # slow is new: its totals are no interval's
    assert window is not None and window.requests == 2
    completion(slow.url, sent, streamed=False)
    window = source.window(key("y"), [fast.url, slow.url])
    assert window is not None and window.requests == 1


class Exposition(ThreadingHTTPServer):
    """An HTTP endpoint answering /metrics with a given text: a stand-in for a vLLM pod (vLLM cannot run here),
    serving the vLLM-shaped expositions of tests/data."""

    def __init__(self, text: str):
        self.text = text

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802, N805 (http.server's names)
                body = self.text.encode()
                handler.send_response(200 if handler.path == "/metrics" else 404)
                handler.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *_: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_vllm_pods_are_read_by_their_own_names_and_a_pod_unlike_the_others_is_left_out(
        scenario: Scenario, caplog: pytest.LogCaptureFixture) -> None:
    data = Path(__file__).parents[1] / "data"
    first, second = ((data / f"vllm-metrics-v0.11-{scrape}.txt").read_text() for scrape in "ab")
    pods = [Exposition(first), Exposition(first)]
    ours = scenario.servers[FAST].url  # an llmops pod among vLLM ones: not mixed in
    try:
        source = ScrapeSource()
        assert source.window(key("v"), [p.url for p in pods] + [ours]) is None
        for pod in pods:
            pod.text = second
        with caplog.at_level(logging.WARNING, logger="llmops.operator.analysis"):
            window = source.window(key("v"), [p.url for p in pods] + [ours])
    finally:
        for pod in pods:
            pod.shutdown()
            pod.server_close()
    # Twice the window tests/unit/test_metric_samples.py works out by hand for one pod between these scrapes.
    assert window is not None and (window.requests, window.errors) == (82, 6)
    assert window.ttft_p99_ms == pytest.approx(660.0) and window.latency_p99_ms == pytest.approx(4850.0)
    assert any(ours in record.getMessage() for record in caplog.records)
