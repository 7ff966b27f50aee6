"""The Kopf layer's reads beyond the indexes stay cheap: a stuck Job's Events, KubeRay discovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiException

from llmops.operator.runtime import handlers
from llmops.operator.runtime.handlers import RAY_OWNED, Controller, owned
from llmops.operator.runtime.metrics import OperatorMetrics
from llmops.operator.settings import KubeRayMode, OperatorSettings, TrafficRouter

OWNER = ("Dataset", "team", "corpus")
QUOTA_EVENT = {"reason": "FailedCreate", "message": "Error creating: pods \"p\" is forbidden: exceeded quota: q",
               "involvedObject": {"kind": "Job", "name": "corpus-data-1", "uid": "u1"}}


class FakeReads:
    """Stands in for KubeWriter's reads; counts them."""

    def __init__(self, served: bool | Exception = True, routes: frozenset[tuple[str, str]] = frozenset()):
        self.served, self.event_reads, self.discoveries = served, 0, 0
        self.routes = routes
        """The traffic-router APIs (group/version, plural) the cluster serves."""
        self.asked: list[tuple[str, str]] = []

    def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        self.event_reads += 1
        assert namespace == "team" and "involvedObject.uid=u1" in field_selector
        return [QUOTA_EVENT]

    def serves(self, api_version: str, plural: str) -> bool:
        self.asked.append((api_version, plural))
        if (api_version, plural) != ("ray.io/v1", "rayjobs"):
            return (api_version, plural) in self.routes
        self.discoveries += 1
        if isinstance(self.served, Exception):
            raise self.served
        return self.served


def job(age_seconds: float) -> dict[str, Any]:
    created = (datetime.now(UTC) - timedelta(seconds=age_seconds)).isoformat().replace("+00:00", "Z")
    return {"kind": "Job", "metadata": {"name": "corpus-data-1", "uid": "u1", "creationTimestamp": created},
            "spec": {}, "status": {}}


def controller(reads: FakeReads, kuberay: KubeRayMode = KubeRayMode.AUTO,
               router: TrafficRouter = TrafficRouter.REPLICAS) -> Controller:
    settings = OperatorSettings(kuberay=kuberay, traffic_router=router)
    return Controller(settings, reads, OperatorMetrics())  # type: ignore[arg-type]


class TestJobEvents:
    def test_a_young_job_or_one_with_pods_costs_no_read(self) -> None:
        reads = FakeReads()
        control = controller(reads)
        pod = {"metadata": {"name": "p", "labels": {"job-name": "corpus-data-1"}}}
        for children in ({"Job": [job(1)]}, {"Job": [job(60)], "Pod": [pod]}):
            assert asyncio.run(control.with_job_events(OWNER, children)) == children
        assert reads.event_reads == 0

    def test_a_stuck_job_is_read_at_most_once_per_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        reads, clock = FakeReads(), [1000.0]
        monkeypatch.setattr(handlers.time, "monotonic", lambda: clock[0])
        control = controller(reads)
        stuck = {"Job": [job(60)]}
        for _ in range(5):  # a burst of reconciles
            assert asyncio.run(control.with_job_events(OWNER, stuck))["Event"] == [QUOTA_EVENT]
        assert reads.event_reads == 1
        clock[0] += handlers.EVENT_READ_SECONDS
        asyncio.run(control.with_job_events(OWNER, stuck))
        assert reads.event_reads == 2

    def test_once_pods_appear_the_cached_events_are_dropped(self) -> None:
        control = controller(FakeReads())
        asyncio.run(control.with_job_events(OWNER, {"Job": [job(60)]}))
        pod = {"metadata": {"name": "p", "labels": {"job-name": "corpus-data-1"}}}
        assert "Event" not in asyncio.run(control.with_job_events(OWNER, {"Job": [job(60)], "Pod": [pod]}))
        assert OWNER not in control._job_events


class TestKubeRayDiscovery:
    def test_auto_is_resolved_once_per_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        reads, clock = FakeReads(served=True), [1000.0]
        monkeypatch.setattr(handlers.time, "monotonic", lambda: clock[0])
        control = controller(reads)
        assert [asyncio.run(control.effective_settings()).kuberay for _ in range(3)] == [KubeRayMode.ON] * 3
        assert reads.discoveries == 1
        reads.served = False  # KubeRay uninstalled: noticed after the interval
        clock[0] += handlers.DISCOVERY_SECONDS + 1
        assert asyncio.run(control.effective_settings()).kuberay is KubeRayMode.OFF

    def test_a_failed_lookup_counts_as_absent_until_asked_again(self) -> None:
        control = controller(FakeReads(served=ApiException(status=503)))
        assert asyncio.run(control.effective_settings()).kuberay is KubeRayMode.OFF

    @pytest.mark.parametrize("mode", [KubeRayMode.ON, KubeRayMode.OFF])
    def test_a_forced_mode_asks_nobody(self, mode: KubeRayMode) -> None:
        reads = FakeReads()
        assert asyncio.run(controller(reads, mode).effective_settings()).kuberay is mode
        assert reads.discoveries == 0

    def test_rayjobs_are_watched_only_where_they_may_be_used(self) -> None:
        assert RAY_OWNED not in owned(OperatorSettings(kuberay=KubeRayMode.OFF))
        assert RAY_OWNED in owned(OperatorSettings(kuberay=KubeRayMode.AUTO))


HTTPROUTES = ("gateway.networking.k8s.io/v1", "httproutes")
POOLS = ("inference.networking.k8s.io/v1", "inferencepools")


class TestTrafficRouterDiscovery:
    @pytest.mark.parametrize(("served", "want"), [
        (frozenset(), TrafficRouter.REPLICAS),
        (frozenset({HTTPROUTES}), TrafficRouter.HTTPROUTE),
        (frozenset({HTTPROUTES, POOLS}), TrafficRouter.INFERENCE_POOL),
        (frozenset({POOLS}), TrafficRouter.REPLICAS),  # a pool needs a route in front of it
    ], ids=["none", "gateway-api", "inference-extension", "pools-without-routes"])
    def test_auto_picks_the_best_router_the_cluster_serves(self, served: frozenset[tuple[str, str]],
                                                           want: TrafficRouter) -> None:
        control = controller(FakeReads(routes=served), KubeRayMode.OFF, TrafficRouter.AUTO)
        assert asyncio.run(control.effective_settings()).traffic_router is want

    def test_a_chosen_router_asks_nobody(self) -> None:
        reads = FakeReads(routes=frozenset({HTTPROUTES}))
        settings = asyncio.run(controller(reads, KubeRayMode.OFF, TrafficRouter.REPLICAS).effective_settings())
        assert settings.traffic_router is TrafficRouter.REPLICAS and reads.asked == []
