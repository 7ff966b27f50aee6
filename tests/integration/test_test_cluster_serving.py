"""What the test cluster gives serving tests: pod IPs a test can serve on, pods that are not Ready, Gateway API CRDs."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.cluster.cluster import FAKE_NOT_READY_ANNOTATION, FAKE_NOT_READY_MESSAGE_ANNOTATION, TestCluster, http_server
from tests.integration.conftest import Kubectl, apply, get
from tests.integration.gateway_fixtures import gateway_crds  # noqa: F401  (the fixture, until conftest imports it)

pytestmark = pytest.mark.cluster


def deployment(name: str, replicas: int, port: int = 8000, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
        {"name": "server", "image": "llmops/serve:test", "ports": [{"name": "http", "containerPort": port}]}]}}
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}}


def free_port() -> int:
    """A port free on every address (bound on the wildcard), so a server can take it on any pod IP."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return str(response.read().decode())


def pod(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return found


def conditions(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in p["status"].get("conditions", [])}


def pod_versions_since(cluster: TestCluster, namespace: str, resource_version: str) -> list[dict[str, Any]]:
    """Every version the namespace's pods went through after `resource_version` (a watch replays them; the API
    server ends it after a second), so a test sees states that lasted only a moment."""
    raw = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion={resource_version}"
                                 "&allowWatchBookmarks=false&timeoutSeconds=1")
    if isinstance(raw, dict):  # a single event decodes as JSON at once
        return [raw["object"]]
    return [json.loads(line)["object"] for line in str(raw).splitlines() if line.strip()]


def container(p: dict[str, Any]) -> dict[str, Any]:
    (status,) = p["status"]["containerStatuses"]
    return dict(status)


# --- 1. Pod addresses a test can serve on ---------------------------------------------------------------------------

def test_pods_get_distinct_loopback_ips_that_a_test_can_serve_on(
        cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    port = free_port()
    apply(kubectl, namespace, deployment("model", 2, port))
    ips = cluster.wait_for_pod_ips(namespace, "app=model", 2)

    assert len(set(ips.values())) == 2, ips
    for name, ip in ips.items():
        address = ipaddress.ip_address(ip)
        assert address.is_loopback and address in cluster.pod_cidr, ip
        status = pod(cluster, namespace, name)["status"]
        assert status["podIPs"] == [{"ip": ip}] and status["hostIP"] == "127.0.0.1" != ip

    # Nothing listens there yet: what answers below is the test's own server for that pod.
    for ip in ips.values():
        with pytest.raises(urllib.error.URLError):
            fetch(f"http://{ip}:{port}/metrics")

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # Which address the request came in on: each pod's server is its own.
            body = f"llmops_test_pod_info{{ip=\"{self.server.server_address[0]}\"}} 1\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    # Both pods serve on the same container port, each on its own IP, as two containers would.
    first_ip, second_ip = sorted(ips.values())
    with http_server(first_ip, port, Metrics), http_server(second_ip, port, Metrics):
        for ip in ips.values():
            assert fetch(f"http://{ip}:{port}/metrics") == f'llmops_test_pod_info{{ip="{ip}"}} 1\n'
        # Bound to exactly the pod's IP: the node's address (127.0.0.1) on that port is not a pod.
        with pytest.raises(urllib.error.URLError):
            fetch(f"http://127.0.0.1:{port}/metrics")

    # A replacement pod gets an address of its own too.
    gone = sorted(ips)[0]
    kubectl("delete", "pod", gone, "-n", namespace, "--wait=true")
    now = cluster.wait_for_pod_ips(namespace, "app=model", 2)
    assert gone not in now
    assert len(set(now.values())) == 2 and all(ipaddress.ip_address(ip) in cluster.pod_cidr for ip in now.values())


# --- 2. Pods that are not Ready -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("reason", "message", "expect"), [
    pytest.param("ImagePullBackOff", None, {
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "llmops/serve:test"'}},
        "restartCount": 0, "started": False}, id="ImagePullBackOff"),
    pytest.param("CrashLoopBackOff", "out of memory", {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 1, "started": False,
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "out of memory"}}},
        id="CrashLoopBackOff"),
    pytest.param("ModelLoadFailed", "no model.safetensors under s3://models/run-9", {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 1, "started": False,
        "lastState": {"terminated": {"exitCode": 78, "reason": "Error",
                                     "message": "model failed to load: no model.safetensors under s3://models/run-9"}}},
        id="ModelLoadFailed"),
    pytest.param("Loading", None, {"state": {"running": {}}, "restartCount": 0, "started": True}, id="Loading"),
])
def test_an_annotated_pod_template_gives_running_pods_that_never_become_ready(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, reason: str, message: str | None,
        expect: dict[str, Any]) -> None:
    annotations = {FAKE_NOT_READY_ANNOTATION: reason}
    if message:
        annotations[FAKE_NOT_READY_MESSAGE_ANNOTATION] = message
    before = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods")["metadata"]["resourceVersion"]
    apply(kubectl, namespace, deployment("model", 2, annotations=annotations))
    ips = cluster.wait_for_pod_ips(namespace, "app=model", 2)
    assert len(set(ips.values())) == 2  # addressed like any other pod
    for name in ips:
        cluster.wait_for(f"{name} written for {reason}",
                         lambda name=name: FAKE_NOT_READY_ANNOTATION in conditions(pod(cluster, namespace, name)))

    written = {name: pod(cluster, namespace, name) for name in ips}
    time.sleep(1)  # "never": nothing rewrites them a moment later either (no stage matches what it wrote)
    for name in ips:
        p = pod(cluster, namespace, name)
        assert p["metadata"]["resourceVersion"] == written[name]["metadata"]["resourceVersion"]
        assert p["status"]["phase"] == "Running"
        cond = conditions(p)
        for type_ in ("Ready", "ContainersReady"):
            assert cond[type_]["status"] == "False", cond
            assert cond[type_]["reason"] == "ContainersNotReady"
            assert cond[type_]["message"] == "containers with unready status: [server]"
        status = container(p)
        assert status["ready"] is False
        for key, value in expect.items():
            if key == "state":
                (kind,) = status["state"]
                assert kind == next(iter(value)) and value[kind].items() <= status["state"][kind].items(), status
            elif key == "lastState":
                assert value["terminated"].items() <= status["lastState"]["terminated"].items(), status
            else:
                assert status[key] == value, (key, status)
        if reason in ("CrashLoopBackOff", "ModelLoadFailed"):
            assert status["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=server")
        else:
            assert not status["lastState"]
    replicas = get(kubectl, namespace, "deployment/model")["status"]
    assert replicas["replicas"] == 2 and not replicas.get("readyReplicas") and not replicas.get("availableReplicas")
    # Not even for a moment: a pod that was Ready once would have counted as available.
    history = pod_versions_since(cluster, namespace, before)
    assert {p["status"].get("phase") for p in history} == {"Pending", "Running"}
    assert not [p for p in history if conditions(p).get("Ready", {}).get("status") == "True"]


def test_set_pod_ready_toggles_a_running_pod_and_the_deployment_follows(
        cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, deployment("model", 1, annotations={FAKE_NOT_READY_ANNOTATION: "ModelLoadFailed"}))
    (name, ip), = cluster.wait_for_pod_ips(namespace, "app=model", 1).items()

    def ready_replicas() -> int:
        return int(get(kubectl, namespace, "deployment/model")["status"].get("readyReplicas", 0))

    p = cluster.set_pod_ready(namespace, name, False, reason="ModelLoadFailed")  # what the template said already
    assert container(p)["lastState"]["terminated"]["message"] == "model failed to load: simulated by the test cluster"

    p = cluster.set_pod_ready(namespace, name, True)
    assert conditions(p)["Ready"]["status"] == "True" and "reason" not in conditions(p)["Ready"]
    assert FAKE_NOT_READY_ANNOTATION not in conditions(p)
    status = container(p)
    # Recovered as a kubelet would show it: running and ready, the crash still counted.
    assert status["ready"] is True and "running" in status["state"] and status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 78
    cluster.wait_for("the Deployment ready", lambda: ready_replicas() == 1)

    p = cluster.set_pod_ready(namespace, name, False, reason="ImagePullBackOff", message="manifest unknown")
    assert container(p)["state"] == {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}}
    cluster.wait_for("the Deployment not ready", lambda: ready_replicas() == 0)

    # Another reason while not ready rewrites the status; the default is a failing readiness probe.
    p = cluster.set_pod_ready(namespace, name, False)
    assert "running" in container(p)["state"] and container(p)["ready"] is False
    assert conditions(p)[FAKE_NOT_READY_ANNOTATION]["reason"] == "ReadinessProbeFailed"

    p = cluster.set_pod_ready(namespace, name, True)
    cluster.wait_for("the Deployment ready again", lambda: ready_replicas() == 1)
    assert p["status"]["podIP"] == ip  # the pod kept its address throughout

    # Settled: no stage matches the status it wrote (a loop would bump the resourceVersion).
    version = p["metadata"]["resourceVersion"]
    time.sleep(1.5)
    assert pod(cluster, namespace, name)["metadata"]["resourceVersion"] == version


def test_a_pod_that_is_not_ready_still_finishes_on_request(
        cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "stuck"}, "spec": {"template": {
        "metadata": {"annotations": {FAKE_NOT_READY_ANNOTATION: "CrashLoopBackOff"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
    (name, _), = cluster.wait_for_pod_ips(namespace, "job-name=stuck", 1).items()
    cluster.wait_for("not ready", lambda: FAKE_NOT_READY_ANNOTATION in conditions(pod(cluster, namespace, name)))
    finished = cluster.finish_pod(namespace, name, exit_code=3)
    assert container(finished)["state"]["terminated"]["exitCode"] == 3


# --- 3. Gateway API and InferencePool CRDs --------------------------------------------------------------------------

def service(name: str, port: int = 8000) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}


@pytest.mark.usefixtures("gateway_crds")
def test_an_httproute_with_weighted_services_and_a_v1_inference_pool_are_accepted(
        kubectl: Kubectl, namespace: str) -> None:
    served = kubectl("api-resources", "-o", "name", "--api-group=gateway.networking.k8s.io").stdout.split()
    assert {"gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
            "httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io",
            "referencegrants.gateway.networking.k8s.io"} <= set(served)
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "chat"}, "spec": {
        "parentRefs": [{"name": "inference-gateway", "namespace": "gateway-system"}],
        "hostnames": ["chat.example.com"],
        "rules": [{"backendRefs": [{"name": "chat-r1", "port": 8000, "weight": 90},
                                   {"name": "chat-r2", "port": 8000, "weight": 10}]}]}}
    pool = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool", "metadata": {"name": "chat-r2"},
            "spec": {"selector": {"matchLabels": {"llmops.dev/deployment": "chat", "llmops.dev/revision": "2"}},
                     "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": "chat-r2-epp", "port": {"number": 9002}}}}
    pool_route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "pools"},
                  "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [
                      {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat-r1", "weight": 0},
                      {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat-r2",
                       "weight": 100}]}]}}
    apply(kubectl, namespace, service("chat-r1"), service("chat-r2"), route, pool, pool_route)

    stored = get(kubectl, namespace, "httproute.gateway.networking.k8s.io/chat")["spec"]
    refs = stored["rules"][0]["backendRefs"]
    # The API server's defaults fill in group and kind: core Services.
    assert [(r["group"], r["kind"], r["name"], r["port"], r["weight"]) for r in refs] == [
        ("", "Service", "chat-r1", 8000, 90), ("", "Service", "chat-r2", 8000, 10)]
    assert stored["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                     "name": "inference-gateway", "namespace": "gateway-system"}]
    assert stored["hostnames"] == ["chat.example.com"]

    stored_pool = get(kubectl, namespace, "inferencepool.inference.networking.k8s.io/chat-r2")
    assert stored_pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert stored_pool["spec"]["selector"] == pool["spec"]["selector"]
    assert stored_pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert stored_pool["spec"]["endpointPickerRef"] == {"group": "", "kind": "Service", "name": "chat-r2-epp",
                                                        "port": {"number": 9002}, "failureMode": "FailClose"}
    pool_refs = get(kubectl, namespace, "httproute/pools")["spec"]["rules"][0]["backendRefs"]
    assert [(r["kind"], r["name"], r["weight"]) for r in pool_refs] == [
        ("InferencePool", "chat-r1", 0), ("InferencePool", "chat-r2", 100)]

    # The schemas' own rules are enforced, so what is stored above passed them.
    no_port = {**route, "metadata": {"name": "bad"},
               "spec": {"rules": [{"backendRefs": [{"name": "chat-r1", "weight": 90}]}]}}
    refused = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(no_port), check=False)
    assert refused.returncode != 0 and "Must have port for Service reference" in refused.stderr
    picker_without_port = {**pool, "metadata": {"name": "bad"},
                           "spec": {**pool["spec"], "endpointPickerRef": {"name": "chat-r2-epp"}}}
    refused = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(picker_without_port),
                      check=False)
    assert refused.returncode != 0 and "port is required when kind is 'Service'" in refused.stderr
