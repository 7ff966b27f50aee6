"""Canary analysis against real model servers: the operator reads their real metrics and decides.

The test cluster gives each pod a loopback address (tests/cluster), so a real `llmops-serve` runs at every server
pod's IP and port: the test starts one per pod the operator asks for. A load generator plays the data plane: it
reads the HTTPRoute's weights and sends each request to a revision's pod accordingly. The canary differs from the
stable in its server settings (a new revision): it decodes one sequence at a time, so under concurrent load its
requests queue for their first token, and a tight time-to-first-token limit fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster.cluster import TestCluster
from tests.integration.conftest import BIN, Kubectl, Operators, apply, finish_job_pod, get, wait_until
from tests.integration.gateway_fixtures import gateway_crds  # noqa: F401 (a fixture)
from tests.integration.test_analysis_sources import Process, prometheus_binary

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("crds", "gateway_crds")]
PORT = 8000
INTERVAL, FAILURE_LIMIT = 4, 2
TTFT_LIMIT_MS = 100
TTFT_TOLERANCE = 1.0
"""The canary's TTFT p99 may be at most twice the stable's over the same interval."""
RATE, BURST = 5, 4
"""Requests per second the load generator sends, BURST at a time (the canary gets its weight's share): the
stable batches a burst together, the one-at-a-time canary makes the second of a burst wait a whole generation
for its first token, every burst, while it still keeps up with the rate."""


def evaluation(model: str) -> dict[str, Any]:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "Evaluation", "metadata": {"name": "gate"}, "spec": {
        "model": {"uri": model}, "tasks": [{"name": "heldout", "type": "perplexity", "uri": "s3://data/heldout.txt"}]}}


def llm_deployment(model: str, batch: int, *, weight: int = 50, min_requests: int = 5,
                   inconclusive_limit: int = 5, pause: str = "10m") -> dict[str, Any]:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "chat"}, "spec": {
        "model": {"uri": model}, "gate": {"evaluation": "gate"}, "replicas": 1,
        "server": {"servedModelName": "tiny", "drainSeconds": 0, "limits": {
            "maxPromptTokens": 64, "maxNewTokens": 48, "maxBatchSize": batch}},
        "canary": {"steps": [{"weight": weight, "pause": pause}], "scaleDownDelay": "5s", "analysis": {
            "interval": f"{INTERVAL}s", "maxErrorRate": 0.01, "maxTimeToFirstTokenP99Ms": TTFT_LIMIT_MS,
            "minRequests": min_requests, "failureLimit": FAILURE_LIMIT, "inconclusiveLimit": inconclusive_limit,
            "compareToStable": {"latencyTolerance": TTFT_TOLERANCE}}}}}


def report(**figures: float) -> None:
    """bench/rollback.py runs this test and reads its measurements from $LLMOPS_ROLLBACK_REPORT."""
    if path := os.environ.get("LLMOPS_ROLLBACK_REPORT"):
        with open(path, "a") as out:
            out.write(json.dumps(figures) + "\n")


def pass_gate(cluster: TestCluster, namespace: str) -> None:
    finish_job_pod(cluster, namespace, "gate-eval-1", json.dumps({"verdict": "Passed", "results": []}))


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return get(kubectl, namespace, "deployment.llmops.dev/chat").get("status") or {}


class PodServers:
    """A real llmops-serve at each server pod's address, started as the pods appear (what the kubelet would run)."""

    def __init__(self, cluster: TestCluster, namespace: str, model: Path, tmp: Path):
        self.cluster, self.namespace, self.model, self.tmp = cluster, namespace, model, tmp
        self.started: dict[str, Process] = {}

    def start(self, revision: int) -> str:
        """Serve revision N's pod with the server config the operator wrote for it; the pod is held not Ready until
        the model is loaded (as its readiness probe would). Returns the pod's base URL."""
        selector = f"llmops.dev/name=chat,llmops.dev/revision={revision}"
        ((pod, ip),) = self.cluster.wait_for_pod_ips(self.namespace, selector, 1).items()
        self.cluster.set_pod_ready(self.namespace, pod, False, reason="ModelLoading", wait=False)
        config = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/configmaps/chat-r{revision}")
        path = self.tmp / f"r{revision}.json"
        path.write_text(config["data"]["config.json"])
        self.started[pod] = Process([str(BIN / "llmops-serve"), "--model", str(self.model), "--config", str(path),
                                     "--host", ip, "--port", str(PORT)], self.tmp / f"r{revision}.log")
        url = f"http://{ip}:{PORT}"
        wait_until(f"revision {revision} loaded", lambda: self.started[pod].alive() and _ok(f"{url}/readyz"),
                   timeout=120)
        self.cluster.set_pod_ready(self.namespace, pod, True)
        return url

    def stop(self) -> None:
        for process in self.started.values():
            process.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Load:
    """The data plane: bursts of requests at a fixed rate (open loop, as real clients arrive), each sent to a
    revision by the route's current weights, counted per revision. A slow revision does not slow arrivals down."""

    cluster: TestCluster
    namespace: str
    urls: dict[str, str]
    """Backend (revision Service name) -> the pod URL behind it."""
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    weights_seen: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def weights(self) -> dict[str, int]:
        route = self.cluster.request("GET", f"/apis/gateway.networking.k8s.io/v1/namespaces/{self.namespace}/"
                                             "httproutes/chat")
        weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
        if not self.weights_seen or self.weights_seen[-1][1] != weights:
            self.weights_seen.append((time.monotonic(), weights))
        return weights

    def send(self, client: httpx.Client, backend: str, streamed: bool) -> None:
        try:
            response = client.post(f"{self.urls[backend]}/v1/completions", json={
                "model": "tiny", "prompt": "To be, or not to be", "max_tokens": 32, "temperature": 0,
                "ignore_eos": True, "stream": streamed})
            if response.status_code != 200:
                self.failed[backend] += 1
        except httpx.HTTPError:
            self.failed[backend] += 1

    def dispatch(self, pool: ThreadPoolExecutor) -> None:
        chooser, client = random.Random(7), httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
        due = time.monotonic()
        while not self.stop.is_set():
            live = {name: w for name, w in self.weights().items() if w > 0}
            for _ in range(BURST if live else 0):  # clients that arrive together, as they do
                (backend,) = chooser.choices(list(live), weights=list(live.values()))
                self.sent[backend] += 1
                pool.submit(self.send, client, backend, chooser.random() < 0.5)
            due += BURST / RATE
            time.sleep(max(0.0, due - time.monotonic()))


@contextlib.contextmanager
def load_on(cluster: TestCluster, namespace: str, urls: dict[str, str]) -> Iterator[Load]:
    """RATE requests per second until the block ends."""
    load = Load(cluster, namespace, urls)
    with ThreadPoolExecutor(32) as pool:
        dispatcher = threading.Thread(target=load.dispatch, args=(pool,), daemon=True)
        dispatcher.start()
        try:
            yield load
        finally:
            load.stop.set()
            dispatcher.join(30)


@pytest.fixture
def servers(cluster: TestCluster, namespace: str, base_model: Path, tmp_path: Path) -> Iterator[PodServers]:
    started = PodServers(cluster, namespace, base_model, tmp_path)
    yield started
    started.stop()


def serve_stable(cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators, servers: PodServers,
                 env: dict[str, str], **spec: Any) -> str:
    operators.start("op", {"LLMOPS_TRAFFIC_ROUTER": "httpRoute", **env})
    model = str(servers.model)
    apply(kubectl, namespace, evaluation(model), llm_deployment(model, batch=8, **spec))
    pass_gate(cluster, namespace)
    url = servers.start(1)
    wait_until("revision 1 serves", lambda: status(kubectl, namespace).get("phase") == "Available", timeout=60)
    return url


def test_a_slow_canary_is_rolled_back_by_its_live_metrics_while_the_stable_answers_every_request(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators, servers: PodServers) -> None:
    stable = serve_stable(cluster, kubectl, namespace, operators, servers, {})
    apply(kubectl, namespace, llm_deployment(str(servers.model), batch=1))  # a new revision: other settings
    canary = servers.start(2)
    with load_on(cluster, namespace, {"chat-r1": stable, "chat-r2": canary}) as load:
        wait_until("the canary gets its share", lambda: load.weights().get("chat-r2") == 50, timeout=60)
        shifted = time.monotonic()
        deadline = time.monotonic() + 60
        while load.weights().get("chat-r2", 0) != 0:  # polled closely: the reaction time is measured here
            assert time.monotonic() < deadline, f"not rolled back: {json.dumps(status(kubectl, namespace))}"
            time.sleep(0.02)
        rolled_back, rolled_back_wall = time.monotonic(), time.time()
        time.sleep(3)  # the stable takes everything now
    final = status(kubectl, namespace)
    assert {r["revision"]: r["outcome"] for r in final["history"]} == {1: "Stable", 2: "RolledBack"}
    check = final["conditions"]
    degraded = next(c for c in check if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "ttftP99Ms" in degraded["message"], degraded
    # Within interval x failureLimit, plus one interval (the first scrape is the baseline), plus reconcile slack.
    said = [(e.get("lastTimestamp") or e.get("eventTime"), e["reason"], e["message"][:160])
            for e in get(kubectl, namespace, "events")["items"] if e["involvedObject"].get("name") == "chat"]
    assert rolled_back - shifted <= INTERVAL * FAILURE_LIMIT + INTERVAL + 3, (rolled_back - shifted, said)
    assert load.sent["chat-r1"] >= 20 and load.failed["chat-r1"] == 0, (load.sent, load.failed)
    ended = datetime.fromisoformat(next(r for r in final["history"] if r["revision"] == 2)["endedAt"])
    report(detection_seconds=rolled_back - shifted, bound_seconds=INTERVAL * FAILURE_LIMIT + INTERVAL,
           failing_check_to_weight_zero_seconds=max(0.0, rolled_back_wall - ended.timestamp()),
           stable_requests=load.sent["chat-r1"], stable_failed=load.failed["chat-r1"],
           canary_requests=load.sent["chat-r2"], canary_failed=load.failed["chat-r2"])
    assert load.sent["chat-r2"] >= 10
    events = get(kubectl, namespace, "events")["items"]
    (warning,) = [e for e in events if e["reason"] == "RolledBack" and e["involvedObject"].get("name") == "chat"]
    assert warning["type"] == "Warning" and "ttftP99Ms" in warning["message"], warning["message"]


def test_a_canary_with_too_little_traffic_pauses_instead_of_failing(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators, servers: PodServers) -> None:
    stable = serve_stable(cluster, kubectl, namespace, operators, servers, {}, inconclusive_limit=2)
    apply(kubectl, namespace, llm_deployment(str(servers.model), batch=16, min_requests=1000, inconclusive_limit=2))
    canary = servers.start(2)
    with load_on(cluster, namespace, {"chat-r1": stable, "chat-r2": canary}) as load:
        wait_until("paused", lambda: (status(kubectl, namespace).get("canary") or {}).get("pausedReason")
                   == "AnalysisInconclusive", timeout=60)
    current = status(kubectl, namespace)
    assert current["canary"]["failedChecks"] == 0 and current["canary"]["weight"] == 50
    progressing = next(c for c in current["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "False" and progressing["reason"] == "AnalysisInconclusive"
    assert "fewer than minRequests 1000" in current["canary"]["lastCheck"]["message"]
    assert load.failed["chat-r1"] == 0


def test_a_good_canary_judged_through_a_real_prometheus_is_promoted_without_a_second_cold_start(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators, servers: PodServers,
        tmp_path: Path) -> None:
    prometheus = PrometheusForPods(tmp_path, namespace)
    try:
        stable = serve_stable(cluster, kubectl, namespace, operators, servers,
                              {"LLMOPS_PROMETHEUS_URL": prometheus.url})
        prometheus.add(stable, revision=1)
        # As fast as the stable (it batches too): it should pass and be promoted after its pause.
        apply(kubectl, namespace, llm_deployment(str(servers.model), batch=16, pause="8s"))
        canary = servers.start(2)
        served_pods = set(servers.started)
        prometheus.add(canary, revision=2)
        with load_on(cluster, namespace, {"chat-r1": stable, "chat-r2": canary}) as load:
            wait_until("promoted", lambda: status(kubectl, namespace).get("currentRevision") == 2, timeout=90)
            wait_until("all traffic on revision 2", lambda: load.weights() == {"chat-r1": 0, "chat-r2": 100},
                       timeout=30)
        current = status(kubectl, namespace)
        check = current["canary"]["lastCheck"] if current.get("canary") else None
        history = {r["revision"]: r["outcome"] for r in current["history"]}
        assert history == {1: "Superseded", 2: "Stable"}
        assert check is None or check["source"] == "prometheus"
        # The promoted revision is the canary's own pod, not a copy started again.
        pods = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=llmops.dev/revision=2")
        assert {p["metadata"]["name"] for p in pods["items"]} <= served_pods
        assert load.failed["chat-r1"] == 0 and load.failed["chat-r2"] == 0
        checks = [e for e in get(kubectl, namespace, "events")["items"] if e["reason"] == "AnalysisPassed"]
        assert checks, "no analysis check passed"
    finally:
        prometheus.stop()


class PrometheusForPods(Process):
    """A real Prometheus scraping the server pods, labelled as the chart's PodMonitor relabels them."""

    def __init__(self, tmp: Path, namespace: str):
        from tests.integration.conftest import free_port

        self.port, self.tmp, self.namespace = free_port(), tmp, namespace
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets: list[dict[str, Any]] = []
        self._write()
        super().__init__([prometheus_binary(), f"--config.file={tmp / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
                          "--web.enable-lifecycle"], tmp / "prometheus.log")
        wait_until("prometheus ready", lambda: self.alive() and _ok(f"{self.url}/-/ready"), timeout=60)

    def _write(self) -> None:
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": [
            {"job_name": "model-servers", "static_configs": self.targets}]}
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))

    def add(self, url: str, revision: int) -> None:
        self.targets.append({"targets": [url.removeprefix("http://")], "labels": {
            "namespace": self.namespace, "deployment": "chat", "revision": str(revision)}})
        self._write()
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()
