"""What a Deployment's children look like: the server pods per runtime, the route and the pools."""

from __future__ import annotations

from typing import Any

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1.deployment import Deployment
from llmops.operator.reconcile.serving import revisions, traffic
from llmops.operator.settings import OperatorSettings, TrafficRouter
from tests.conftest import example, patched

SETTINGS = OperatorSettings(server_image="server:1", vllm_image="vllm:1", epp_image="epp:1",
                            gateway_parent_refs=({"name": "inference-gw", "namespace": "gateways"},))
MODEL = "pvc://models/chat/v3"


def make(**spec: Any) -> Deployment:
    return parse(patched(example("Deployment"), {"metadata": {"namespace": "team", "uid": "u"}, "spec": spec}))


def server(deployment: Deployment) -> tuple[dict[str, Any], dict[str, Any]]:
    revision = revisions.RevisionSpec(3, "abc", MODEL, revisions.server_image(deployment, SETTINGS))
    children = revisions.revision_children(deployment, revision, 2, SETTINGS)
    (apps,) = [c for c in children if c["kind"] == "Deployment"]
    return apps, apps["spec"]["template"]["spec"]


def test_llmops_runtime_reads_its_config_and_mounts_the_model_claim_and_api_key() -> None:
    deployment = make(server={"apiKeySecret": {"name": "chat-key", "key": "token"}})
    apps, pod = server(deployment)
    (container,) = pod["containers"]
    assert container["image"] == "server:1" and container["command"] == ["llmops-serve"]
    assert container["args"][:2] == ["--model", "/mnt/pvc/models/chat/v3"]  # the claim, mounted
    assert "--api-key-file" in container["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pvc-models"]["persistentVolumeClaim"]["claimName"] == "models"
    assert volumes["api-key"]["secret"] == {"secretName": "chat-key", "items": [{"key": "token", "path": "key"}]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}  # fetched once per pod
    assert pod["terminationGracePeriodSeconds"] == 30  # drainSeconds 25 + 5
    assert apps["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_vllm_runtime_runs_vllms_server_on_the_gpu_pool_with_its_own_probes() -> None:
    deployment = make(server={"runtime": "vllm", "apiKeySecret": {"name": "k", "key": "t"}}, gpusPerReplica=2,
                      placement={"nodeSelector": {"llmops.dev/pool": "gpu"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]})
    _, pod = server(deployment)
    (container,) = pod["containers"]
    assert container["image"] == "vllm:1" and container["command"] == ["vllm"]
    args = container["args"]
    assert args[:3] == ["serve", "--model", "/mnt/pvc/models/chat/v3"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--served-model-name") + 1] == "tiny-shakespeare"
    assert args[args.index("--max-model-len") + 1] == str(512 + 128)  # the example's limits
    assert args[args.index("--api-key") + 1] == "$(LLMOPS_API_KEY)"
    assert {"name": "LLMOPS_API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "t"}}} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"llmops.dev/pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_a_revision_is_the_artifact_the_server_settings_and_the_image() -> None:
    base = make()
    same = revisions.digest(MODEL, base, "server:1")
    assert revisions.digest(MODEL, make(replicas=9, resources={"requests": {"cpu": "4"}}), "server:1") == same
    assert revisions.digest("pvc://models/chat/v4", base, "server:1") != same
    assert revisions.digest(MODEL, base, "server:2") != same
    assert revisions.digest(MODEL, make(server={"limits": {"maxNewTokens": 64}}), "server:1") != same


def test_http_route_weights_backends_and_attaches_to_the_default_gateway() -> None:
    children = traffic.entry_children(make(), 1, {1: 90, 2: 10}, TrafficRouter.HTTPROUTE, SETTINGS)
    (route,) = [c for c in children if c["kind"] == "HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "inference-gw", "namespace": "gateways"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "tiny-shakespeare-r1", "port": 8000, "weight": 90},
        {"name": "tiny-shakespeare-r2", "port": 8000, "weight": 10}]
    spec_refs = traffic.entry_children(make(route={"parentRefs": [{"name": "own", "sectionName": "http"}]}), 1,
                                       {1: 100}, TrafficRouter.HTTPROUTE, SETTINGS)
    assert spec_refs[1]["spec"]["parentRefs"] == [{"name": "own", "sectionName": "http"}]


def test_inference_pools_one_per_revision_each_with_its_endpoint_picker() -> None:
    children = traffic.entry_children(make(), 1, {1: 50, 2: 50}, TrafficRouter.INFERENCE_POOL, SETTINGS)
    pools = {c["metadata"]["name"]: c for c in children if c["kind"] == "InferencePool"}
    assert sorted(pools) == ["tiny-shakespeare-r1", "tiny-shakespeare-r2"]
    pool = pools["tiny-shakespeare-r2"]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"]["llmops.dev/revision"] == "2"
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"]["name"] == "tiny-shakespeare-r2-epp"
    (route,) = [c for c in children if c["kind"] == "HTTPRoute"]
    assert route["spec"]["rules"][0]["backendRefs"][1] == {
        "group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "tiny-shakespeare-r2", "weight": 50}
    pickers = [c["metadata"]["name"] for c in children if c["kind"] == "Deployment"]
    assert pickers == ["tiny-shakespeare-r1-epp", "tiny-shakespeare-r2-epp"]
