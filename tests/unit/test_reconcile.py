"""Pure reconcile logic: conditions, Job state, the Dataset's children and status, diffs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.common import Condition, ConditionStatus, Phase
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.backends import kubernetes
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import dataset, evaluation, finetune, pretrainjob
from llmops.operator.reconcile.conditions import MAX_MESSAGE_LENGTH, get_condition, set_condition
from llmops.operator.reconcile.diff import is_subset, merge_patch
from llmops.operator.reconcile.jobs import SCRATCH_DIR, job_state
from llmops.operator.reconcile.storage import local_path, pvc_volumes
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config import exit_codes
from llmops.trainer.config.result import WorkloadResult
from tests.conftest import DELETE, example, patched

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(artifact_root="pvc://artifacts", trainer_image="trainer:1")


def make_dataset(generation: int = 1, **spec: Any) -> Dataset:
    manifest = patched(example("Dataset"), {"metadata": {"namespace": "team", "uid": "uid-1",
                                                         "generation": generation}, "spec": spec})
    return parse(manifest)


def make_job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "shakespeare-data-1"}, "spec": {}, "status": status}


class TestSetCondition:
    def test_adds_then_keeps_transition_time_while_status_holds(self) -> None:
        conditions: list[Condition] = []
        assert set_condition(conditions, "Ready", False, "Creating", "m", NOW, 1)
        later = NOW + timedelta(minutes=5)
        assert set_condition(conditions, "Ready", False, "PodsPending", "waiting", later, 1)
        assert conditions[0].last_transition_time == NOW and conditions[0].reason == "PodsPending"

    def test_flip_moves_transition_time(self) -> None:
        conditions: list[Condition] = []
        set_condition(conditions, "Ready", False, "Creating", "m", NOW, 1)
        set_condition(conditions, "Ready", True, "Completed", "done", NOW + timedelta(1), 2)
        (ready,) = conditions
        assert ready.status is ConditionStatus.TRUE and ready.last_transition_time == NOW + timedelta(1)
        assert ready.observed_generation == 2

    def test_same_values_report_no_change(self) -> None:
        conditions: list[Condition] = []
        set_condition(conditions, "Ready", True, "Completed", "done", NOW, 1)
        assert not set_condition(conditions, "Ready", True, "Completed", "done", NOW + timedelta(1), 1)

    def test_long_messages_are_cut(self) -> None:
        conditions: list[Condition] = []
        set_condition(conditions, "Failed", True, "Error", "x" * 10_000, NOW, 1)
        assert len(get_condition(conditions, "Failed").message) == MAX_MESSAGE_LENGTH


@pytest.mark.parametrize(
    ("job", "want_phase", "want_reason"),
    [
        (None, Phase.PENDING, "Creating"),
        (make_job(active=1), Phase.PENDING, "PodsPending"),  # active counts pending pods
        (make_job(active=1, ready=1), Phase.RUNNING, "Running"),
        (make_job(conditions=[{"type": "Complete", "status": "True"}]), Phase.SUCCEEDED, "Completed"),
        (make_job(failed=3, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                         "message": "Job has reached the specified backoff limit"}]),
         Phase.FAILED, "BackoffLimitExceeded"),
        (make_job(conditions=[{"type": "Suspended", "status": "True"}]), Phase.PENDING, "Queued"),
    ],
    ids=["absent", "pending-pod", "running", "complete", "failed", "suspended"],
)
def test_job_state(job: dict[str, Any] | None, want_phase: Phase, want_reason: str) -> None:
    state = job_state(job, "shakespeare-data-1")
    assert (state.phase, state.reason) == (want_phase, want_reason)


class TestJobsAsKubernetes131AndLaterShowThem:
    """Since 1.31 the Job controller first says the outcome (SuccessCriteriaMet, FailureTarget) and adds Complete
    or Failed only once every pod is gone; in between `ready` is 0. The run must not read as Pending then."""

    STARTED = "2026-11-24T11:50:00Z"

    def test_success_criteria_met_is_success_with_its_time_as_the_end(self) -> None:
        job = make_job(startTime=self.STARTED, succeeded=1, ready=0, active=0, terminating=0, conditions=[
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "lastTransitionTime": "2026-11-24T11:59:00Z"}])
        state = job_state(job, "shakespeare-data-1")
        assert (state.phase, state.reason) == (Phase.SUCCEEDED, "Completed")
        assert state.completion_time == datetime(2026, 11, 24, 11, 59, tzinfo=UTC)

    def test_failure_target_is_failure_with_the_exit_code_reason(self) -> None:
        job = make_job(startTime=self.STARTED, failed=1, terminating=1, conditions=[
            {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy",
             "message": "Container main for pod x-0 failed with exit code 78 matching FailJob rule at index 0",
             "lastTransitionTime": "2026-11-24T11:59:00Z"}])
        pod = {"metadata": {"name": "x-0", "labels": {"job-name": "shakespeare-data-1"}}, "status": {
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 78, "message": "bad uri"}}}]}}
        state = job_state(job, "shakespeare-data-1", [pod])
        assert (state.phase, state.reason) == (Phase.FAILED, exit_codes.REASONS[exit_codes.CONFIG_ERROR])
        assert "bad uri" in state.message

    def test_a_finished_run_goes_from_running_to_succeeded_with_one_event(self) -> None:
        ds = make_dataset()
        running = make_job(startTime=self.STARTED, active=1, ready=1)
        children = {"Job": [running]}
        first = reconcile(dataset, ds, children, {}, SETTINGS, NOW)
        ds.status = DatasetStatus.model_validate(first.status)
        finished = make_job(startTime=self.STARTED, succeeded=1, ready=0, conditions=[
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-11-24T11:59:00Z"}])
        second = reconcile(dataset, ds, {"Job": [finished]}, {}, SETTINGS, NOW)
        ds.status = DatasetStatus.model_validate(second.status)
        complete = {**finished, "status": {**finished["status"], "completionTime": "2026-11-24T11:59:01Z",
                                           "conditions": [*finished["status"]["conditions"],
                                                          {"type": "Complete", "status": "True"}]}}
        third = reconcile(dataset, ds, {"Job": [complete]}, {}, SETTINGS, NOW)
        assert [first.status["phase"], second.status["phase"], third.status["phase"]] == [
            "Running", "Succeeded", "Succeeded"]
        assert [e.reason for e in second.events] == ["Completed"] and third.events == []


class TestDatasetReconcile:
    def test_children_are_a_config_map_and_a_job_named_by_generation(self) -> None:
        decision = reconcile(dataset, make_dataset(generation=3), {}, {}, SETTINGS, NOW)
        assert [(c["kind"], c["metadata"]["name"]) for c in decision.children] == [
            ("ConfigMap", "shakespeare-data-3"), ("Job", "shakespeare-data-3")]
        for child in decision.children:
            assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
            assert child["metadata"]["labels"]["llmops.dev/name"] == "shakespeare"

    def test_reconcile_is_deterministic(self) -> None:
        one = reconcile(dataset, make_dataset(), {}, {}, SETTINGS, NOW)
        two = reconcile(dataset, make_dataset(), {}, {}, SETTINGS, NOW)
        assert one == two

    def test_job_retries_preemption_for_free_and_fails_fast_on_config_errors(self) -> None:
        job = reconcile(dataset, make_dataset(), {}, {}, SETTINGS, NOW).children[1]
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailJob" and exit_codes.CONFIG_ERROR in rules[0]["onExitCodes"]["values"]
        assert rules[1]["action"] == "Ignore" and rules[1]["onExitCodes"]["values"] == [exit_codes.PREEMPTED]
        assert job["spec"]["backoffLimit"] == 2

    def test_pvc_output_is_mounted_and_handed_over_as_a_path(self) -> None:
        config_map, job = reconcile(dataset, make_dataset(), {}, {}, SETTINGS, NOW).children
        assert '"outputUri": "/mnt/pvc/artifacts/team/datasets/shakespeare"' in config_map["data"]["config.json"]
        pod = job["spec"]["template"]["spec"]
        assert {"name": "pvc-artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}} in pod["volumes"]

    def test_placement_image_and_credentials_reach_the_pod(self) -> None:
        ds = make_dataset(image={"image": "my/trainer:2"}, output={"credentialsSecret": "s3-creds"},
                          execution={"placement": {"nodeSelector": {"pool": "cpu"}}})
        pod = reconcile(dataset, ds, {}, {}, SETTINGS, NOW).children[1]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "my/trainer:2" and pod["nodeSelector"] == {"pool": "cpu"}
        assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]

    def test_streaming_reaches_the_workload_and_its_scratch_volume_is_the_pods_tmpdir(self) -> None:
        streaming = {"enabled": True, "blockDocuments": 512, "partitions": 8}
        ds = make_dataset(execution={"streaming": streaming, "scratchSizeLimit": "50Gi"})
        config_map, job = reconcile(dataset, ds, {}, {}, SETTINGS, NOW).children
        assert json.loads(config_map["data"]["config.json"])["streaming"] == streaming
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert {"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]
        assert {"name": "scratch", "mountPath": SCRATCH_DIR} in container["volumeMounts"]
        assert {"name": "TMPDIR", "value": SCRATCH_DIR} in container["env"]

    def test_without_streaming_there_is_no_scratch_volume(self) -> None:
        config_map, job = reconcile(dataset, make_dataset(), {}, {}, SETTINGS, NOW).children
        assert json.loads(config_map["data"]["config.json"])["streaming"]["enabled"] is False
        pod = job["spec"]["template"]["spec"]
        assert "scratch" not in [v["name"] for v in pod["volumes"]]
        assert "TMPDIR" not in [e["name"] for e in pod["containers"][0].get("env", [])]

    def test_status_follows_the_job(self) -> None:
        ds = make_dataset()
        pending = reconcile(dataset, ds, {}, {}, SETTINGS, NOW)
        # The Job is applied in the same reconcile, so the first status already waits for its pod.
        assert pending.status["phase"] == "Pending" and pending.events[0].reason == "PodsPending"
        done_job = {"metadata": {"name": "shakespeare-data-1"},
                    "status": {"conditions": [{"type": "Complete", "status": "True"}],
                               "completionTime": "2026-11-24T12:05:00Z"}}
        ds.status = DatasetStatus.model_validate(pending.status)
        done = reconcile(dataset, ds, {"Job": [done_job]}, {}, SETTINGS, NOW)
        assert done.status["phase"] == "Succeeded"
        assert done.status["artifactUri"] == "pvc://artifacts/team/datasets/shakespeare"
        assert {c["type"]: c["status"] for c in done.status["conditions"]} == {
            "Succeeded": "True", "Failed": "False", "Progressing": "False", "Ready": "True"}
        assert [e.reason for e in done.events] == ["Completed"]

    def test_more_than_one_worker_without_kuberay_is_rejected(self) -> None:
        with pytest.raises(NotImplementedError, match="spec.execution.workers"):
            reconcile(dataset, make_dataset(execution={"workers": 4}), {}, {}, SETTINGS, NOW)


def test_storage_paths() -> None:
    assert local_path("pvc://data/corpus/a.txt") == "/mnt/pvc/data/corpus/a.txt"
    assert local_path("s3://bucket/x") == "s3://bucket/x"
    volumes, mounts = pvc_volumes(["pvc://b/x", "s3://y", "pvc://a", "pvc://b/z"])
    assert [v["name"] for v in volumes] == ["pvc-a", "pvc-b"] and len(mounts) == 2


def test_subset_and_merge_patch() -> None:
    assert is_subset({"a": {"b": 1}, "l": [{"x": 1}]}, {"a": {"b": 1, "c": 2}, "l": [{"x": 1, "y": 2}], "z": 0})
    assert not is_subset({"l": [1, 2]}, {"l": [1]})
    assert is_subset({"cpu": 2}, {"cpu": "2"})
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "gone": 1}, {"a": 1, "b": {"c": 2, "d": 2}}) == {
        "gone": None, "b": {"c": 2}}
    assert merge_patch({"a": 1}, {"a": 1}) == {}


class TestPretrainJobReconcile:
    """A PretrainJob waits for its Dataset, then runs torchrun on an Indexed Job behind a headless Service."""

    def job(self, **spec: Any) -> Any:
        manifest = patched(example("PretrainJob"), {"metadata": {"namespace": "team", "uid": "uid-2",
                                                                 "generation": 1}, "spec": spec})
        return parse(manifest)

    def dataset_body(self, phase: str, **status: Any) -> dict[str, Any]:
        return {"status": {"phase": phase, **status}}

    def test_waits_for_a_missing_dataset_and_says_so(self) -> None:
        decision = reconcile(pretrainjob, self.job(), {}, {("Dataset", "shakespeare"): None}, SETTINGS, NOW)
        assert decision.children == []
        assert decision.status["phase"] == "Waiting" and decision.status["waitingFor"] == "Dataset shakespeare"
        ready = next(c for c in decision.status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "WaitingForDataset" and "does not exist yet" in ready["message"]

    def test_a_failed_dataset_fails_the_job_with_its_reason(self) -> None:
        body = self.dataset_body("Failed", conditions=[{"type": "Failed", "status": "True", "message": "bad source"}])
        decision = reconcile(pretrainjob, self.job(), {}, {("Dataset", "shakespeare"): body}, SETTINGS, NOW)
        failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
        assert decision.status["phase"] == "Failed" and failed["reason"] == "DatasetFailed"
        assert "bad source" in failed["message"]

    def test_multi_node_gpu_run_once_the_dataset_succeeded(self) -> None:
        job = self.job(nodePool={"nodes": 2, "gpusPerNode": 8, "nodeSelector": {"llmops.dev/pool": "gpu"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]})
        body = self.dataset_body("Succeeded", artifactUri="pvc://artifacts/team/datasets/shakespeare",
                                 stats={"vocabSize": 2048})
        decision = reconcile(pretrainjob, job, {}, {("Dataset", "shakespeare"): body}, SETTINGS, NOW)
        kinds = [(c["kind"], c["metadata"]["name"]) for c in decision.children]
        assert kinds == [("ConfigMap", "tiny-shakespeare-train-1"), ("Service", "tiny-shakespeare-train-1"),
                         ("Job", "tiny-shakespeare-train-1")]
        job_spec = decision.children[2]["spec"]
        assert job_spec["completions"] == job_spec["parallelism"] == 2 and job_spec["completionMode"] == "Indexed"
        pod = job_spec["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "8"
        assert env["PET_MASTER_ADDR"] == "tiny-shakespeare-train-1-0.tiny-shakespeare-train-1"
        assert pod["subdomain"] == "tiny-shakespeare-train-1" and container["image"] == SETTINGS.trainer_cuda_image
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert container["command"] == ["torchrun"] and container["args"][:2] == ["--no-python", "llmops-pretrain"]
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert config["dataUri"] == "/mnt/pvc/artifacts/team/datasets/shakespeare"
        assert decision.status["dataUri"] == "pvc://artifacts/team/datasets/shakespeare"
        # The plan itself is backend-neutral: abstract URIs; only the pod's copy of the config has mount paths.
        plan = pretrainjob.plan(job, {("Dataset", "shakespeare"): body}, SETTINGS)
        assert plan.config["dataUri"] == "pvc://artifacts/team/datasets/shakespeare"
        assert plan.reads == {"data": "pvc://artifacts/team/datasets/shakespeare"}
        assert plan.role.entrypoint == "llmops-pretrain" and plan.launcher.value == "torchrun"


    def test_a_compute_budget_sets_the_steps(self) -> None:
        job = self.job(training={"maxSteps": DELETE}, computeBudget={"flops": 1e15})
        body = self.dataset_body("Succeeded", artifactUri="s3://b/d", stats={"vocabSize": 2048})
        decision = reconcile(pretrainjob, job, {}, {("Dataset", "shakespeare"): body}, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        parameters = job.spec.model.parameter_count(2048)
        batch = job.spec.training.batch.micro_batch_size
        assert config["training"]["maxSteps"] == int(1e15 / (6 * parameters * batch * 128))

    def test_continued_pretraining_waits_for_its_parent_then_trains_from_its_model(self) -> None:
        job = self.job(model=DELETE, init={"pretrainJob": "parent", "contextLength": 512})
        data = self.dataset_body("Succeeded", artifactUri="s3://b/d", stats={"vocabSize": 2048})
        refs: dict[tuple[str, str], Any] = {("Dataset", "shakespeare"): data, ("PretrainJob", "parent"): None}
        assert pretrainjob.references(job) == [("Dataset", "shakespeare"), ("PretrainJob", "parent")]
        waiting = reconcile(pretrainjob, job, {}, refs, SETTINGS, NOW)
        assert waiting.children == [] and waiting.status["waitingFor"] == "PretrainJob parent"
        refs[("PretrainJob", "parent")] = {"status": {"phase": "Succeeded", "artifactUri": "s3://b/parent/model",
                                                      "jobName": "parent-train-1"}}
        decision = reconcile(pretrainjob, job, {}, refs, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert config["init"] == {"uri": "s3://b/parent/model", "contextLength": 512}
        assert config["lineage"]["parent"] == "PretrainJob/parent"
        assert decision.status["initUri"] == "s3://b/parent/model"
        assert {"kind": "PretrainJob", "name": "parent", "run": "parent-train-1"}.items() <= next(
            i for i in decision.status["inputs"] if i["kind"] == "PretrainJob").items()


def succeeded(uri: str) -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "artifactUri": uri}}


class TestFineTuneAndEvaluationReconcile:
    def test_fine_tune_waits_for_its_base_then_trains_from_its_model(self) -> None:
        ft = parse(patched(example("FineTune"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1}}))
        waiting_decision = reconcile(finetune, ft, {}, {("PretrainJob", "tiny-shakespeare"): None}, SETTINGS, NOW)
        assert waiting_decision.status["phase"] == "Waiting"
        assert waiting_decision.status["waitingFor"] == "PretrainJob tiny-shakespeare"
        refs = {("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/team/pretrainjobs/tiny-shakespeare/model")}
        decision = reconcile(finetune, ft, {}, refs, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert config["baseUri"] == "s3://b/team/pretrainjobs/tiny-shakespeare/model"
        assert config["method"] == "lora" and config["lora"]["rank"] == 8
        assert decision.children[1]["spec"]["template"]["spec"]["containers"][0]["command"] == ["llmops-finetune"]

    def test_a_distillation_waits_for_its_teacher_too_and_passes_it_on(self) -> None:
        ft = parse(patched(example("FineTune"), {
            "metadata": {"namespace": "team", "uid": "u", "generation": 1},
            "spec": {"method": "distill", "lora": DELETE, "sft": DELETE,
                     "distill": {"teacher": {"fineTune": "big"}, "temperature": 4.0}}}))
        assert finetune.references(ft) == [("PretrainJob", "tiny-shakespeare"), ("FineTune", "big")]
        refs: dict[tuple[str, str], Any] = {
            ("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/team/pretrainjobs/tiny-shakespeare/model"),
            ("FineTune", "big"): None}
        assert reconcile(finetune, ft, {}, refs, SETTINGS, NOW).status["waitingFor"] == "FineTune big"
        refs[("FineTune", "big")] = succeeded("s3://b/team/finetunes/big/model")
        config = json.loads(reconcile(finetune, ft, {}, refs, SETTINGS, NOW).children[0]["data"]["config.json"])
        assert config["teacherUri"] == "s3://b/team/finetunes/big/model"
        assert config["distill"]["temperature"] == 4.0 and "teacher" not in config["distill"]
        assert config["lineage"]["teacher"] == "s3://b/team/finetunes/big/model"

    def test_a_quantization_needs_no_data(self) -> None:
        ft = parse(patched(example("FineTune"), {
            "metadata": {"namespace": "team", "uid": "u", "generation": 1},
            "spec": {"method": "quantize", "lora": DELETE, "sft": DELETE, "data": DELETE,
                     "quantize": {"scheme": "int4", "groupSize": 32}}}))
        refs = {("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/team/pretrainjobs/tiny-shakespeare/model")}
        decision = reconcile(finetune, ft, {}, refs, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert config["method"] == "quantize" and config["quantize"] == {"scheme": "int4", "groupSize": 32,
                                                                         "ignore": ["lm_head"]}
        assert "dataUri" not in config and decision.children[1]["kind"] == "Job"

    @pytest.mark.parametrize("pool", [{}, {"nodes": 2, "gpusPerNode": 1}], ids=["one pod", "torchrun"])
    def test_a_fine_tune_deadline_reaches_its_job(self, pool: dict[str, Any]) -> None:
        ft = parse(patched(example("FineTune"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1},
                                                 "spec": {"activeDeadlineSeconds": 3600, "nodePool": pool}}))
        refs = {("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/team/pretrainjobs/tiny-shakespeare/model")}
        job = reconcile(finetune, ft, {}, refs, SETTINGS, NOW).children[-1]
        assert job["kind"] == "Job" and job["spec"]["activeDeadlineSeconds"] == 3600

    @pytest.mark.parametrize(("pool", "want_kinds", "want_env"), [
        ({"nodes": 2, "gpusPerNode": 4, "nodeSelector": {"llmops.dev/pool": "gpu"}},
         ["ConfigMap", "Service", "Job"],
         {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4",
          "PET_MASTER_ADDR": "tiny-shakespeare-lora-finetune-1-0.tiny-shakespeare-lora-finetune-1"}),
        ({"nodes": 1, "gpusPerNode": 2}, ["ConfigMap", "Job"],
         {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_MASTER_ADDR": "localhost"}),
    ])
    def test_a_distributed_fine_tune_runs_torchrun_like_a_pretrain_job(
            self, pool: dict[str, Any], want_kinds: list[str], want_env: dict[str, str]) -> None:
        ft = parse(patched(example("FineTune"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1},
                                                 "spec": {"nodePool": pool}}))
        refs = {("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/team/pretrainjobs/tiny-shakespeare/model")}
        decision = reconcile(finetune, ft, {}, refs, SETTINGS, NOW)
        assert [c["kind"] for c in decision.children] == want_kinds
        assert {c["metadata"]["name"] for c in decision.children} == {"tiny-shakespeare-lora-finetune-1"}
        job_spec = decision.children[-1]["spec"]
        nodes = pool["nodes"]
        assert job_spec["completions"] == job_spec["parallelism"] == nodes and job_spec["completionMode"] == "Indexed"
        pod = job_spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["torchrun"]
        assert container["args"] == ["--no-python", "llmops-finetune", "--config", "/etc/llmops/config.json"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env[k] for k in want_env} == want_env
        assert "PET_NODE_RANK" in env  # from the completion index
        assert container["resources"]["limits"]["nvidia.com/gpu"] == pool["gpusPerNode"]
        assert container["image"] == SETTINGS.trainer_cuda_image
        if nodes > 1:
            service = decision.children[1]
            assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
            assert service["spec"]["selector"]["job-name"] == "tiny-shakespeare-lora-finetune-1"
            assert pod["nodeSelector"] == {"llmops.dev/pool": "gpu"}
        else:
            assert "subdomain" not in pod
        assert json.loads(decision.children[0]["data"]["config.json"])["method"] == "lora"

    def test_evaluation_reads_its_verdict_from_the_pod_termination_message(self) -> None:
        ev = parse(patched(example("Evaluation"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1}}))
        refs = {("FineTune", "tiny-shakespeare-lora"): succeeded("s3://b/m"),
                ("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/base"),
                ("Dataset", "shakespeare"): succeeded("s3://b/d")}
        first = reconcile(evaluation, ev, {}, refs, SETTINGS, NOW)
        config = json.loads(first.children[0]["data"]["config.json"])
        assert config["modelUri"] == "s3://b/m" and config["tasks"][0]["dataUri"] == "s3://b/d"
        job_name = first.children[1]["metadata"]["name"]
        done_job = {"metadata": {"name": job_name}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        message = json.dumps({"verdict": "Failed", "results": [
            {"task": "heldout", "metric": "perplexity", "value": 512.0, "threshold": "<= 400", "margin": -112.0,
             "passed": False}]})
        pod = {"metadata": {"labels": {"job-name": job_name}},
               "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": message}}}]}}
        done = reconcile(evaluation, ev, {"Job": [done_job], "Pod": [pod]}, refs, SETTINGS, NOW)
        assert done.status["phase"] == "Succeeded" and done.status["verdict"] == "Failed"
        passed = next(c for c in done.status["conditions"] if c["type"] == "Passed")
        assert passed["status"] == "False" and "heldout/perplexity 512" in passed["message"]
        assert "VerdictFailed" in [e.reason for e in done.events]

    def test_a_finished_training_run_shows_the_final_losses_it_reported_on_the_result_channel(self) -> None:
        ft = parse(patched(example("FineTune"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1}}))
        refs = {("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/base")}
        job_name = reconcile(finetune, ft, {}, refs, SETTINGS, NOW).children[-1]["metadata"]["name"]
        done_job = {"metadata": {"name": job_name}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        message = WorkloadResult(artifact_uri="s3://b/ft/model", metrics={"loss": 1.25, "validationLoss": 1.5})
        pod = {"metadata": {"labels": {"job-name": job_name}}, "status": {"containerStatuses": [
            {"state": {"terminated": {"exitCode": 0, "message": message.to_message()}}}]}}
        done = reconcile(finetune, ft, {"Job": [done_job], "Pod": [pod]}, refs, SETTINGS, NOW)
        assert done.status["phase"] == "Succeeded"
        assert done.status["metrics"]["loss"] == 1.25 and done.status["metrics"]["validationLoss"] == 1.5


def pod(job: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"{job}-0-abc", "labels": {"job-name": job}}, "status": status}


class TestPodsExplainTheState:
    JOB = "shakespeare-data-1"

    def test_an_unschedulable_pod_is_named_with_the_scheduler_message(self) -> None:
        pending = pod(self.JOB, conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                             "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}])
        state = job_state(make_job(active=1), self.JOB, [pending])
        assert state.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in state.message

    def test_an_image_that_cannot_be_pulled(self) -> None:
        stuck = pod(self.JOB, containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff",
                                                                         "message": "no such image"}}}])
        state = job_state(make_job(active=1), self.JOB, [stuck])
        assert (state.phase, state.reason) == (Phase.PENDING, "ImagePullBackOff") and "no such image" in state.message

    def test_a_failed_workload_says_why_in_the_condition(self) -> None:
        failed = make_job(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                                 "message": "Container main for pod x failed with exit code 65"}])
        dead = pod(self.JOB, containerStatuses=[{"state": {"terminated": {
            "exitCode": 65, "message": "NonFiniteLoss: loss nan at step 120"}}}])
        state = job_state(failed, self.JOB, [dead])
        assert state.reason == "NonFiniteLoss" and "loss nan at step 120" in state.message


def test_a_pod_sees_pvc_uris_as_mount_paths_but_lineage_keeps_where_things_are() -> None:
    document = {"dataUri": "pvc://c/x", "tasks": [{"dataUri": "pvc://c/t"}, {"dataUri": "s3://b/t"}], "seed": 3,
                "lineage": {"base": "pvc://c/model"}}
    assert kubernetes.in_pod(document) == {
        "dataUri": "/mnt/pvc/c/x", "tasks": [{"dataUri": "/mnt/pvc/c/t"}, {"dataUri": "s3://b/t"}], "seed": 3,
        "lineage": {"base": "pvc://c/model"}}
