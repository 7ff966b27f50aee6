"""The Deployment reconcile as a specification: gate, revisions, steps, weights, promotion, failure, commands.

A small World plays the cluster: it keeps what the last reconcile applied, shows each revision's apps/v1
Deployment with as many ready pods as the test allows, and moves the clock.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1 import rollout_commands as commands
from llmops.operator.reconcile import deployment
from llmops.operator.reconcile.serving.samples import Window
from llmops.operator.reconcile.workload import Decision
from llmops.operator.settings import OperatorSettings, TrafficRouter
from tests.conftest import DELETE, example, patched

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URI_1, URI_2, URI_3 = "s3://models/ft/run-1/model", "s3://models/ft/run-2/model", "s3://models/ft/run-3/model"
FINE_TUNE = ("FineTune", "tiny-shakespeare-int8")
EVALUATION = ("Evaluation", "tiny-shakespeare-int8")


def finished(uri: str, job: str = "") -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "artifactUri": uri, "jobName": job or run_of(uri)}}


def run_of(uri: str) -> str:
    return f"tiny-shakespeare-int8-finetune-{uri.rsplit('-', 2)[-1].split('/')[0]}"


def evaluated(uri: str, verdict: str = "Passed", job: str = "") -> dict[str, Any]:
    passed = verdict == "Passed"
    return {"status": {"phase": "Succeeded", "verdict": verdict, "modelUri": uri,
                       "modelRun": f"FineTune/tiny-shakespeare-int8@{job or run_of(uri)}", "results": [
        {"task": "heldout", "metric": "perplexity", "value": 120.0 if passed else 900.0, "threshold": "<= 400",
         "margin": 280.0 if passed else -500.0, "passed": passed}]}}


class World:
    """What one Deployment's reconciles see: the referenced resources, the children applied, ready pods."""

    def __init__(self, spec: dict[str, Any] | None = None, router: TrafficRouter = TrafficRouter.REPLICAS):
        self.manifest = patched(example("Deployment"), {
            "metadata": {"namespace": "team", "uid": "uid-d", "generation": 1}, "spec": spec or {}})
        self.settings = OperatorSettings(server_image="server:1", traffic_router=router)
        self.refs: dict[tuple[str, str], Any] = {FINE_TUNE: finished(URI_1), EVALUATION: evaluated(URI_1)}
        self.status: dict[str, Any] | None = None
        self.applied: list[dict[str, Any]] = []
        self.unready: set[int] = set()
        """Revisions whose pods never become ready."""
        self.now = NOW
        self.decision: Decision | None = None
        self.said: list[str] = []
        """Reasons of every Event so far."""
        self.verdicts: dict[str, dict[str, Any]] = {}
        """Jobs the test has finished, by name: the verdict their pod wrote."""

    def ship(self, uri: str, verdict: str = "Passed") -> None:
        """The FineTune produced a new artifact and its Evaluation scored it."""
        self.refs[FINE_TUNE], self.refs[EVALUATION] = finished(uri), evaluated(uri, verdict)

    def change_spec(self, patch: dict[str, Any]) -> None:
        self.manifest = patched(self.manifest, {"spec": patch})
        self.manifest["metadata"]["generation"] += 1

    def annotate(self, key: str, value: str) -> None:
        self.manifest["metadata"].setdefault("annotations", {})[key] = value

    def observed(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for child in self.applied:
            stored = copy.deepcopy(child)
            if child["kind"] == "Deployment" and (revision := deployment._revision_of(child)) is not None:
                replicas = child["spec"]["replicas"]
                stored["status"] = {"readyReplicas": 0 if revision in self.unready else replicas}
            if child["kind"] == "Job" and (verdict := self.verdicts.get(child["metadata"]["name"])) is not None:
                stored["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
                out.setdefault("Pod", []).append({"metadata": {"name": "p", "labels": {
                    "job-name": child["metadata"]["name"]}}, "status": {"containerStatuses": [{"state": {
                        "terminated": {"exitCode": 0, "message": json.dumps(verdict)}}}]}})
            out.setdefault(child["kind"], []).append(stored)
        return out

    def reconcile(self, after: float = 0, read: deployment.MetricsRead | None = None) -> dict[str, Any]:
        self.now += timedelta(seconds=after)
        body = {**self.manifest, "status": self.status} if self.status else self.manifest
        refs = {**self.refs, deployment.METRICS_KEY: read} if read else self.refs
        self.decision = deployment.reconcile(parse(body), self.observed(), refs, self.settings, self.now)
        self.applied, self.status = self.decision.children, self.decision.status
        self.said += [e.reason for e in self.decision.events]
        return self.status

    def settle(self, after: float = 0) -> dict[str, Any]:
        """Reconcile twice: once to apply, once to see the pods it made ready."""
        self.reconcile(after)
        return self.reconcile()

    # what a test reads
    def replicas(self) -> dict[int, int]:
        return {int(c["metadata"]["labels"]["llmops.dev/revision"]): c["spec"]["replicas"] for c in self.applied
                if c["kind"] == "Deployment" and "llmops.dev/revision" in c["metadata"]["labels"]}

    def route_weights(self) -> dict[str, int]:
        (route,) = [c for c in self.applied if c["kind"] == "HTTPRoute"]
        return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}

    def condition(self, type_: str) -> dict[str, Any]:
        assert self.status is not None
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def outcomes(self) -> dict[int, str]:
        assert self.status is not None
        return {r["revision"]: r["outcome"] for r in self.status["history"]}

    def reasons(self) -> list[str]:
        assert self.decision is not None
        return [e.reason for e in self.decision.events]


NO_ANALYSIS = {"canary": {"steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "2m"},
                                    {"weight": 100, "pause": "1m"}], "analysis": DELETE}}
NO_CANARY = {"canary": DELETE}


def serving(world: World) -> World:
    """Revision 1 rolled out and Available."""
    world.settle()
    assert world.status is not None and world.status["phase"] == "Available"
    return world


class TestGate:
    def test_nothing_serves_while_the_evaluation_runs(self) -> None:
        world = World()
        world.refs[EVALUATION] = {"status": {"phase": "Running"}}
        status = world.reconcile()
        assert status["phase"] == "Waiting" and world.replicas() == {}
        assert world.condition("Gated")["reason"] == "WaitingForEvaluation"
        assert world.condition("Ready")["status"] == "False"

    def test_a_failed_evaluation_never_gets_pods_and_says_which_threshold(self) -> None:
        world = World()
        world.ship(URI_1, verdict="Failed")
        status = world.reconcile()
        assert world.replicas() == {} and status["phase"] == "Failed"
        gated = world.condition("Gated")
        assert gated["reason"] == "EvaluationFailed" and "heldout/perplexity 900 (needs <= 400, margin -500)" in \
            gated["message"]
        assert world.outcomes() == {1: "Gated"} and "GateFailed" in world.reasons()

    def test_an_evaluation_of_another_artifact_does_not_count(self) -> None:
        world = World()
        world.refs[EVALUATION] = evaluated(URI_2)  # the Evaluation scored another run of the model
        world.reconcile()
        assert world.replicas() == {}
        assert world.condition("Gated")["reason"] == "EvaluatedAnotherModel"
        assert URI_2 in world.condition("Gated")["message"] and URI_1 in world.condition("Gated")["message"]

    def test_an_evaluation_of_an_earlier_run_of_the_same_artifact_uri_does_not_count(self) -> None:
        world = serving(World())
        # The FineTune ran again (a new spec): same output URI, new Job; its Evaluation still shows the old run.
        world.refs[FINE_TUNE] = finished(URI_1, job="tiny-shakespeare-int8-finetune-9")
        status = world.settle()
        gated = world.condition("Gated")
        assert gated["reason"] == "EvaluatedAnotherModel" and "finetune-9" in gated["message"]
        assert world.replicas() == {1: 2} and status["currentRevision"] == 1  # revision 1 keeps serving
        world.refs[EVALUATION] = evaluated(URI_1, job="tiny-shakespeare-int8-finetune-9")
        status = world.settle()
        assert status["history"][-1]["modelRun"] == "FineTune/tiny-shakespeare-int8@tiny-shakespeare-int8-finetune-9"
        assert [r["revision"] for r in status["history"]] == [1, 2]  # the retrained model is a new revision

    def test_a_new_revision_that_fails_its_gate_gets_no_traffic_and_the_stable_keeps_serving(self) -> None:
        world = serving(World(NO_ANALYSIS))
        world.ship(URI_2, verdict="Failed")
        status = world.settle()
        assert world.replicas() == {1: 2} and status["currentRevision"] == 1
        assert status["phase"] == "Degraded" and world.condition("Degraded")["reason"] == "Gated"
        assert world.condition("Ready")["status"] == "True"


class TestFirstRevision:
    def test_starts_at_full_size_without_steps_and_is_available_once_ready(self) -> None:
        world = World()
        status = world.reconcile()
        assert world.replicas() == {1: 2} and status["phase"] == "Progressing"
        status = world.reconcile()
        assert status["phase"] == "Available" and status["currentRevision"] == 1 and status["readyReplicas"] == 2
        assert world.condition("Ready")["status"] == "True" and world.condition("Gated")["reason"] == \
            "EvaluationPassed"
        (entry,) = status["history"]
        assert entry["outcome"] == "Stable" and entry["modelUri"] == URI_1
        assert entry["metrics"] == {"heldout/perplexity": 120.0} and entry["deployedAt"]
        assert status["url"] == "http://tiny-shakespeare.team.svc:8000/v1"

    def test_children_are_owned_labelled_and_probe_the_server(self) -> None:
        world = World()
        world.reconcile()
        kinds = sorted((c["kind"], c["metadata"]["name"]) for c in world.applied)
        assert kinds == [("ConfigMap", "tiny-shakespeare-r1"), ("Deployment", "tiny-shakespeare-r1"),
                         ("Service", "tiny-shakespeare"), ("Service", "tiny-shakespeare-r1")]
        (apps,) = [c for c in world.applied if c["kind"] == "Deployment"]
        assert all(c["metadata"]["ownerReferences"][0]["uid"] == "uid-d" for c in world.applied)
        pod = apps["spec"]["template"]
        assert pod["metadata"]["labels"]["llmops.dev/revision"] == "1"
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["llmops-serve"] and URI_1 in container["args"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # 600 s to load a model by default, probed every 5 s
        assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 600
        assert container["ports"] == [{"name": "http", "containerPort": 8000}]
        assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}

    def test_pods_that_never_become_ready_fail_within_the_progress_deadline_with_their_cause(self) -> None:
        world = World()
        world.unready.add(1)
        world.reconcile()
        world.reconcile(after=9 * 60)
        assert world.status is not None and world.status["phase"] == "Progressing"
        status = world.reconcile(after=61)
        assert status["phase"] == "Failed" and world.outcomes() == {1: "Failed"}
        assert "progressDeadline 10m" in world.condition("Degraded")["message"]


class TestCanaryByReplicas:
    def test_steps_follow_the_pod_ratio_and_the_stable_shrinks_only_for_ready_canary_pods(self) -> None:
        world = serving(World({**NO_ANALYSIS, "replicas": 10}))
        world.ship(URI_2)
        status = world.reconcile()
        assert "RolloutStarted" in world.reasons()
        assert world.replicas() == {1: 10, 2: 1}  # the canary is not ready yet: the stable keeps every pod
        assert status["canary"]["weight"] == 0 and status["phase"] == "Progressing"
        status = world.reconcile()
        assert world.replicas() == {1: 9, 2: 1} and status["canary"]["effectiveWeight"] == 9  # 1 of 11 ready pods
        status = world.reconcile()
        assert status["canary"]["effectiveWeight"] == 10  # once the stable's tenth pod is gone
        world.reconcile(after=119)
        assert world.status is not None and world.status["canary"]["step"] == 0  # the pause is 2m
        world.reconcile(after=1)  # the step ends; the canary grows to 5 pods, the stable keeps 9 until they are ready
        assert world.replicas() == {1: 9, 2: 5} and world.status["canary"]["step"] == 1
        world.reconcile()
        assert world.replicas() == {1: 5, 2: 5}
        world.settle(after=120)
        world.reconcile()
        assert world.replicas() == {1: 0, 2: 10} and world.status["canary"]["effectiveWeight"] == 100
        status = world.settle(after=60)  # the last step's pause: then the canary is promoted
        assert status["currentRevision"] == 2 and world.outcomes() == {1: "Superseded", 2: "Stable"}
        assert world.said.count("Promoted") == 2 and status["canary"]["promotedAt"]  # revision 1, then 2
        status = world.settle(after=31)  # the scale-down delay: revision 1's objects go
        assert world.replicas() == {2: 10} and status["phase"] == "Available" and "canary" not in status

    def test_without_canary_steps_a_new_revision_replaces_the_old_once_ready(self) -> None:
        world = serving(World(NO_CANARY))
        world.ship(URI_2)
        world.reconcile()
        assert world.replicas() == {1: 2, 2: 2}
        status = world.settle()
        assert status["currentRevision"] == 2 and world.replicas() == {2: 2}


class TestCanaryWithRoute:
    def test_weights_follow_the_steps_and_the_old_stable_stays_warm_after_promotion(self) -> None:
        world = serving(World({**NO_ANALYSIS, "replicas": 4}, router=TrafficRouter.HTTPROUTE))
        assert world.route_weights() == {"tiny-shakespeare-r1": 100}
        world.ship(URI_2)
        world.reconcile()
        assert world.route_weights() == {"tiny-shakespeare-r1": 100, "tiny-shakespeare-r2": 0}  # not ready yet
        assert world.replicas() == {1: 4, 2: 1}
        world.reconcile()
        assert world.route_weights() == {"tiny-shakespeare-r1": 90, "tiny-shakespeare-r2": 10}
        world.reconcile(after=120)  # the step ends: the canary grows to 2 pods, keeping 10% until they are ready
        assert world.route_weights() == {"tiny-shakespeare-r1": 90, "tiny-shakespeare-r2": 10}
        world.reconcile()
        assert world.route_weights() == {"tiny-shakespeare-r1": 50, "tiny-shakespeare-r2": 50}
        assert world.replicas() == {1: 4, 2: 2}  # the stable keeps all its pods: a rollback is a weight change
        world.settle(after=120)
        world.settle(after=60)
        assert world.outcomes()[2] == "Stable"
        assert world.route_weights() == {"tiny-shakespeare-r1": 0, "tiny-shakespeare-r2": 100}
        assert world.replicas() == {1: 4, 2: 4}  # warm for scaleDownDelay (30s)
        world.settle(after=31)
        assert world.replicas() == {2: 4} and world.route_weights() == {"tiny-shakespeare-r2": 100}
        assert world.said[-1] == "ScaledDown" and world.status is not None and world.status["phase"] == "Available"
        assert world.said.count("StepReached") == 3 and world.said.count("StepCompleted") == 3

    def test_the_entry_service_selects_only_the_stable(self) -> None:
        world = serving(World(NO_ANALYSIS, router=TrafficRouter.HTTPROUTE))
        world.ship(URI_2)
        world.settle()
        (entry,) = [c for c in world.applied if c["kind"] == "Service" and c["metadata"]["name"] == "tiny-shakespeare"]
        assert entry["spec"]["selector"]["llmops.dev/revision"] == "1"


class TestCommands:
    def test_promote_skips_the_remaining_steps(self) -> None:
        world = serving(World(NO_ANALYSIS))
        world.ship(URI_2)
        world.settle()
        world.annotate(commands.PROMOTE, "t1")
        world.settle()
        status = world.reconcile()
        assert status["currentRevision"] == 2 and status["handledCommands"][commands.PROMOTE] == "t1"

    def test_abort_rolls_back_and_the_revision_is_not_retried_at_this_spec(self) -> None:
        world = serving(World(NO_ANALYSIS))
        world.ship(URI_2)
        world.settle()
        world.annotate(commands.ABORT, "t1")
        status = world.reconcile()
        assert world.outcomes() == {1: "Stable", 2: "Aborted"} and world.replicas()[2] == 0
        status = world.settle(after=600)
        assert status["phase"] == "Degraded" and world.replicas() == {1: 2}
        world.annotate(commands.RETRY, "t2")
        world.reconcile()
        assert world.outcomes()[2] == "Canary"

    def test_undo_rolls_an_older_revision_out_again_until_the_spec_changes(self) -> None:
        world = serving(World(NO_CANARY))
        world.ship(URI_2)
        world.settle()
        world.settle()
        assert world.outcomes() == {1: "Superseded", 2: "Stable"}
        world.annotate(commands.UNDO, commands.command_value("t1", revision=1))
        world.settle()
        status = world.settle()
        assert status["currentRevision"] == 1 and status["pinnedRevision"] == 1
        assert world.condition("Gated")["reason"] == "VerdictReused"
        world.ship(URI_3)
        world.change_spec({"replicas": 3})
        world.settle()
        status = world.settle()
        assert status["currentRevision"] == 3 and "pinnedRevision" not in status


def test_a_pause_asks_to_be_called_again_when_it_ends() -> None:
    world = serving(World(NO_ANALYSIS))
    world.ship(URI_2)
    world.settle()
    assert world.decision is not None and world.decision.requeue_after == 120


def test_a_held_rollout_does_not_spin() -> None:
    world = serving(World(NO_ANALYSIS))
    world.change_spec({"paused": True})
    world.ship(URI_2)
    world.settle()
    world.reconcile(after=600)  # long past the pause: nothing is due until someone resumes it
    assert world.decision is not None and world.decision.requeue_after is None
    assert world.status is not None and world.status["canary"]["step"] == 0


ONLINE = {"canary": {"steps": [{"weight": 50, "pause": "1m"}], "analysis": {"onlineEvaluation": {
    "tasks": [{"name": "qa", "type": "exactMatch", "uri": "s3://data/qa.jsonl"}],
    "thresholds": [{"task": "qa", "metric": "exact_match", "min": 0.5}]}}}}


def online_verdict(passed: bool) -> dict[str, Any]:
    return {"verdict": "Passed" if passed else "Failed", "results": [
        {"task": "qa", "metric": "exact_match", "value": 0.8 if passed else 0.1, "threshold": ">= 0.5",
         "passed": passed}]}


class TestOnlineEvaluation:
    def test_each_step_scores_the_canarys_live_endpoint_and_a_failed_verdict_is_a_failed_check(self) -> None:
        world = serving(World(ONLINE))
        world.ship(URI_2)
        world.settle()
        (job,) = [c for c in world.applied if c["kind"] == "Job"]
        assert job["metadata"]["name"] == "tiny-shakespeare-r2-oe0-0-1"
        (config_map,) = [c for c in world.applied if c["kind"] == "ConfigMap" and c["metadata"]["name"] ==
                         "tiny-shakespeare-r2-oe0-0-1"]
        config = json.loads(config_map["data"]["config.json"])
        endpoint = config["endpoint"]
        assert (endpoint["url"], endpoint["model"]) == ("http://tiny-shakespeare-r2.team.svc:8000/v1",
                                                        "tiny-shakespeare")
        assert "modelUri" not in config and job["spec"]["template"]["spec"]["containers"][0]["command"] == [
            "llmops-evaluate"]
        world.verdicts[job["metadata"]["name"]] = online_verdict(passed=False)
        status = world.reconcile()
        assert status["canary"]["failedChecks"] == 1 and status["canary"]["onlineAttempts"] == 1
        assert "qa/exact_match 0.1 (needs >= 0.5)" in world.decision.events[-1].message  # type: ignore[union-attr]
        (again,) = [c for c in world.applied if c["kind"] == "Job"]  # it runs again
        assert again["metadata"]["name"] == "tiny-shakespeare-r2-oe0-1-1"
        world.verdicts[again["metadata"]["name"]] = online_verdict(passed=True)
        world.reconcile()
        assert world.status is not None and world.status["canary"]["onlineEvaluation"] == "Passed"
        assert not [c for c in world.applied if c["kind"] == "Job"]  # done: its Job goes

    def test_failure_limit_online_failures_roll_back(self) -> None:
        world = serving(World(ONLINE))
        world.ship(URI_2)
        world.settle()
        for _ in range(2):  # failureLimit defaults to 2
            (job,) = [c for c in world.applied if c["kind"] == "Job"]
            world.verdicts[job["metadata"]["name"]] = online_verdict(passed=False)
            world.reconcile()
        assert world.outcomes()[2] == "RolledBack" and world.replicas()[2] == 0


# --- analysis: every interval, the canary's metrics against the thresholds ---------------------------------
ANALYSIS = {"canary": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 60, "pause": "1m"}], "analysis": {
    "interval": "30s", "maxErrorRate": 0.05, "maxTimeToFirstTokenP99Ms": 500, "minRequests": 20, "failureLimit": 2,
    "inconclusiveLimit": 3}}}
GOOD = Window(requests=100, errors=0, error_rate=0.0, ttft_p99_ms=120.0, tpot_p99_ms=20.0, latency_p99_ms=900.0)
SLOW = Window(requests=100, errors=0, error_rate=0.0, ttft_p99_ms=2400.0, tpot_p99_ms=20.0, latency_p99_ms=3000.0)
QUIET = Window(requests=3, errors=0, error_rate=0.0, ttft_p99_ms=100.0)


def read(canary: Window | None, stable: Window | None = GOOD) -> deployment.MetricsRead:
    return deployment.MetricsRead(canary, stable, "scrape")


def canary_running(router: TrafficRouter = TrafficRouter.REPLICAS) -> World:
    world = serving(World({**ANALYSIS, "replicas": 5}, router=router))
    world.ship(URI_2)
    world.settle()  # the canary's pod is ready: step 1 reached; the direct scrape's baseline is due at once
    assert world.status is not None and world.status["canary"]["nextCheckAt"] == world.status["canary"][
        "stepStartedAt"]
    world.reconcile(read=deployment.MetricsRead(None, None, "scrape", baseline=True))
    assert "lastCheck" not in world.status["canary"]  # a baseline is no check
    return world


class TestAnalysis:
    def test_a_check_is_due_every_interval_and_the_step_ends_after_its_pause_and_a_passing_check(self) -> None:
        world = canary_running()
        body = parse({**world.manifest, "status": world.status})
        assert deployment.metrics_wanted(body, world.now) is None  # not due yet
        assert deployment.metrics_wanted(body, world.now + timedelta(seconds=30)) == (2, 1)
        status = world.reconcile(after=30, read=read(GOOD))
        check = status["canary"]["lastCheck"]
        assert check["verdict"] == "Passed" and check["requests"] == 100 and status["canary"]["stepPassed"]
        assert "AnalysisPassed" in world.reasons()
        world.reconcile(after=30, read=read(GOOD))
        assert world.status is not None and world.status["canary"]["step"] == 1  # 1m pause + a passing check

    def test_without_a_passing_check_the_clock_alone_never_ends_a_step(self) -> None:
        world = canary_running()
        world.reconcile(after=30, read=read(QUIET))
        world.reconcile(after=30, read=read(QUIET))
        status = world.reconcile(after=5)
        assert status["canary"]["step"] == 0 and status["canary"]["lastCheck"]["verdict"] == "Inconclusive"
        assert "fewer than minRequests 20" in status["canary"]["lastCheck"]["message"]

    def test_too_little_traffic_pauses_the_rollout_instead_of_failing_it_and_promote_resumes(self) -> None:
        world = canary_running()
        for _ in range(3):
            status = world.reconcile(after=30, read=read(QUIET))
        assert status["canary"]["pausedReason"] == "AnalysisInconclusive" and status["canary"]["failedChecks"] == 0
        assert world.condition("Progressing")["status"] == "False"
        assert world.condition("Progressing")["reason"] == "AnalysisInconclusive"
        assert status["phase"] == "Progressing" and world.outcomes()[2] == "Canary"
        world.annotate(commands.PROMOTE, "t1")
        world.settle()
        assert world.status is not None and world.status["currentRevision"] == 2

    def test_failure_limit_failed_checks_roll_back_at_once_and_say_which_metric(self) -> None:
        world = canary_running(TrafficRouter.HTTPROUTE)
        assert world.route_weights()["tiny-shakespeare-r2"] == 20
        world.reconcile(after=30, read=read(SLOW))
        assert world.status is not None and world.status["canary"]["failedChecks"] == 1
        assert world.route_weights()["tiny-shakespeare-r2"] == 20  # one failure is not the limit
        status = world.reconcile(after=30, read=read(SLOW))
        assert world.route_weights() == {"tiny-shakespeare-r1": 100, "tiny-shakespeare-r2": 0}
        assert world.replicas() == {1: 5, 2: 0} and world.outcomes() == {1: "Stable", 2: "RolledBack"}
        assert status["phase"] == "RollingBack"  # its pods still run; once gone, Degraded
        (warning,) = [e for e in world.decision.events if e.reason == "RolledBack"]  # type: ignore[union-attr]
        assert warning.type == "Warning" and "ttftP99Ms 2400 > 500" in warning.message
        status = world.settle()
        assert status["phase"] == "Degraded" and world.condition("Degraded")["reason"] == "RolledBack"
        assert world.condition("Ready")["status"] == "True"  # the stable kept serving throughout
        status = world.settle(after=600)
        assert world.outcomes()[2] == "RolledBack" and "canary" not in status  # not retried at this spec

    def test_a_failure_after_promotion_rolls_back_to_the_warm_stable(self) -> None:
        world = canary_running(TrafficRouter.HTTPROUTE)
        world.change_spec({"canary": {"scaleDownDelay": "5m"}})
        world.annotate(commands.PROMOTE, "t1")
        world.settle()
        status = world.reconcile()
        assert status["currentRevision"] == 2 and world.replicas() == {1: 5, 2: 5}  # revision 1 still warm
        world.reconcile(after=30, read=deployment.MetricsRead(SLOW, None, "scrape"))
        world.reconcile(after=1, read=None)
        status = world.reconcile(after=29, read=deployment.MetricsRead(SLOW, None, "scrape"))
        assert status["currentRevision"] == 1 and world.outcomes() == {1: "Stable", 2: "RolledBack"}
        assert world.route_weights() == {"tiny-shakespeare-r1": 100, "tiny-shakespeare-r2": 0}
