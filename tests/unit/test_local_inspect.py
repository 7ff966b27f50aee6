"""Local mode's `get`, `describe` and name lookup over a store laid out as the runner writes it."""

from __future__ import annotations

import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmops.operator.api.v1alpha1 import KINDS
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.local.inspect import (
    age,
    describe,
    duration,
    find,
    get_table,
    load_events,
    load_resources,
    lookup,
    number,
    resolve_kind,
)
from tests.local_store import NOW, dataset, evaluation, event, lifecycle, pretrain, write_store


def rows(table: str) -> list[dict[str, str]]:
    """A kubectl-style table as dicts, cut at the header's column starts (cells may be blank)."""
    header, *body = table.splitlines()
    names = header.split()
    starts = [header.index(f"{name} ") if f"{name} " in header else header.index(name) for name in names]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)} for line in body]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path, lifecycle(), {
        ("PretrainJob", "tiny-shakespeare"): [event("Created", "Job tiny-shakespeare-1 created", timedelta(minutes=4)),
                                              event("Started", "torchrun started", timedelta(seconds=90))],
    })


# --- Reading the store ------------------------------------------------------------------------------------

def test_resources_are_in_lifecycle_order_whatever_order_they_were_written(store: Path) -> None:
    kinds = [r["kind"] for r in load_resources(store)]
    assert kinds == ["Dataset", "PretrainJob", "FineTune", "Evaluation", "Deployment"]


def test_a_file_being_written_is_skipped_not_fatal(store: Path) -> None:
    (store / "resources" / "dataset" / "half.yaml").write_text("")
    (store / "resources" / "dataset" / "next.yaml.tmp").write_text("kind: Dataset\nmetadata: {name: next}\n")
    assert [r["metadata"]["name"] for r in load_resources(store) if r["kind"] == "Dataset"] == ["shakespeare"]


def test_an_empty_or_missing_store_has_nothing(tmp_path: Path) -> None:
    assert load_resources(tmp_path) == []
    assert load_events(tmp_path, "Dataset", "shakespeare") == []


def test_events_are_read_in_order_with_any_kind_spelling(store: Path) -> None:
    path = store / "events" / "pretrainjob" / "tiny-shakespeare.jsonl"
    path.write_text(path.read_text() + '{"time": "2025-06-01T11:59:')  # the runner is mid-append
    for kind in ("PretrainJob", "ptj", "pretrainjobs"):
        assert [e["reason"] for e in load_events(store, kind, "tiny-shakespeare")] == ["Created", "Started"]


# --- Kinds ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spelling", "kind"), [
    ("dataset", "Dataset"), ("datasets", "Dataset"), ("llmds", "Dataset"), ("DATASET", "Dataset"),
    ("PretrainJob", "PretrainJob"), ("ptj", "PretrainJob"), ("pretrainjobs.llmops.dev", "PretrainJob"),
    ("ft", "FineTune"), ("llmeval", "Evaluation"), ("Deployments", "Deployment"), ("llmdeploy", "Deployment"),
])
def test_a_kind_is_accepted_as_kind_plural_or_short_name(spelling: str, kind: str) -> None:
    assert resolve_kind(spelling) == kind


def test_an_unknown_kind_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="unknown kind 'jobs'") as error:
        resolve_kind("jobs")
    for spelling in ("datasets", "ptj", "llmds", "finetunes", "llmeval", "llmdeploy"):
        assert spelling in str(error.value)


def _wire_fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by their camelCase wire name, with `X | None` unwrapped."""
    fields = {}
    for name, info in model.model_fields.items():
        types = [t for t in typing.get_args(info.annotation) or (info.annotation,) if t is not type(None)]
        fields[info.alias or name] = types[0] if len(types) == 1 else info.annotation
    return fields


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_status_printer_column_names_a_real_status_field(kind: str) -> None:
    """The columns are read with simple dot paths; this keeps those paths and the status models in step."""
    for column in KINDS[kind].names.printer_columns:
        first, *path = column.json_path.lstrip(".").split(".")
        if first != "status":
            continue
        model: Any = KINDS[kind].field_model("status")
        for key in path:
            assert key in _wire_fields(model), f"{kind} column {column.name}: {column.json_path}"
            model = _wire_fields(model)[key]


# --- Values -----------------------------------------------------------------------------------------------

def test_lookup_follows_dot_paths_and_tolerates_missing_steps() -> None:
    doc = {"status": {"metrics": {"loss": 1.5}, "phase": "Running"}}
    assert lookup(doc, ".status.metrics.loss") == 1.5
    assert lookup(doc, ".status.progress.percent") is None
    assert lookup(doc, ".status.phase.deeper") is None
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        lookup(doc, ".status.conditions[0].type")


@pytest.mark.parametrize(("ago", "text"), [
    (timedelta(seconds=-3), "0s"), (timedelta(seconds=45), "45s"), (timedelta(minutes=5, seconds=10), "5m"),
    (timedelta(hours=2, minutes=59), "179m"), (timedelta(hours=5), "5h"), (timedelta(days=2, hours=1), "2d"),
    (timedelta(days=800), "2y"),
])
def test_age_is_shown_in_one_unit_as_kubectl_does(ago: timedelta, text: str) -> None:
    assert age((NOW - ago).isoformat(), NOW) == text


def test_duration_and_number_formats() -> None:
    assert [duration(s) for s in (0, 45, 65, 76, 3725)] == ["0s", "45s", "1m05s", "1m16s", "1h02m"]
    assert [number(v) for v in (5.12345, 12345.6, 0.0003, 7, True, "x")] == ["5.123", "12346", "0.0003", "7",
                                                                              "true", "x"]


# --- get --------------------------------------------------------------------------------------------------

def test_get_one_kind_shows_its_printer_columns(store: Path) -> None:
    table = get_table(load_resources(store), "ptj", now=NOW)
    assert table.splitlines()[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "AGE"]  # Tokens/s is wide-only
    assert rows(table) == [{"NAME": "tiny-shakespeare", "PHASE": "Running", "PROGRESS": "20%", "LOSS": "5.123",
                            "AGE": "5m"}]


def test_get_wide_adds_the_priority_columns(store: Path) -> None:
    (row,) = rows(get_table(load_resources(store), "PretrainJob", now=NOW, wide=True))
    assert row["TOKENS/S"] == "12346"


def test_get_dataset_and_deployment_read_nested_status_fields(store: Path) -> None:
    resources = load_resources(store)
    assert rows(get_table(resources, "datasets", now=NOW)) == [
        {"NAME": "shakespeare", "PHASE": "Succeeded", "PROGRESS": "", "DOCUMENTS": "1200", "TOKENS": "345678",
         "AGE": "3h"}]
    (deploy,) = rows(get_table(resources, "llmdeploy", now=NOW))
    assert deploy == {"NAME": "tiny-shakespeare", "PHASE": "Progressing", "READY": "2", "CANARY": "25", "STEP": "1",
                      "REVISION": "1", "URL": "http://127.0.0.1:8000/v1", "AGE": "2d"}


def test_get_all_shows_one_table_per_kind_with_prefixed_names(store: Path) -> None:
    tables = get_table(load_resources(store), None, now=NOW).split("\n\n")
    assert [rows(t)[0]["NAME"] for t in tables] == [
        "dataset.llmops.dev/shakespeare", "pretrainjob.llmops.dev/tiny-shakespeare",
        "finetune.llmops.dev/tiny-shakespeare-lora", "evaluation.llmops.dev/tiny-shakespeare-lora",
        "deployment.llmops.dev/tiny-shakespeare"]
    assert rows(tables[3])[0]["VERDICT"] == "Failed"
    assert tables[4].splitlines()[0].split()[:3] == ["NAME", "PHASE", "READY"]


def test_get_says_when_there_is_nothing(store: Path) -> None:
    assert get_table([], None, now=NOW) == "No resources found."
    assert get_table([dataset()], "finetune", now=NOW) == "No finetunes found."
    with pytest.raises(ValueError, match="unknown kind 'pods'"):
        get_table([dataset()], "pods", now=NOW)


# --- describe ---------------------------------------------------------------------------------------------

def _line(text: str, start: str) -> str:
    """The one line of `text` that starts with `start` (after its indent), with its spacing collapsed."""
    (line,) = [joined for joined in (" ".join(line.split()) for line in text.splitlines()) if joined.startswith(start)]
    return line


def test_describe_a_training_run(store: Path) -> None:
    job = find(load_resources(store), "ptj/tiny-shakespeare")
    text = describe(job, load_events(store, "PretrainJob", "tiny-shakespeare"), NOW)
    assert _line(text, "Name:") == "Name: tiny-shakespeare"
    assert _line(text, "Namespace:") == "Namespace: default"
    assert _line(text, "Kind:") == "Kind: PretrainJob"
    assert _line(text, "API Version:") == "API Version: llmops.dev/v1alpha1"
    assert _line(text, "maxSteps:") == "maxSteps: 200"  # the spec, as YAML under Spec:
    assert text.index("Spec:") < text.index("maxSteps:") < text.index("Status:")
    assert _line(text, "Phase:") == "Phase: Running"
    assert _line(text, "Progress:") == "Progress: 40/200 steps (20%), 2.1 steps/s, eta 1m16s"
    assert _line(text, "Loss:") == "Loss: 5.123"
    assert _line(text, "Tokens Per Second:") == "Tokens Per Second: 12346"
    conditions = text[text.index("Conditions:"):text.index("Events:")]
    assert _line(conditions, "Type") == "Type Status Reason Message Last Transition"
    assert _line(conditions, "Ready") == "Ready False Training torchrun on 1 process 30s ago"
    events = text[text.index("Events:"):]
    assert _line(events, "Type") == "Type Reason Age Message"
    assert _line(events, "Normal Created") == "Normal Created 4m Job tiny-shakespeare-1 created"
    assert _line(events, "Normal Started") == "Normal Started 90s torchrun started"


def test_describe_an_evaluation_shows_verdict_and_results() -> None:
    text = describe(evaluation(), [], NOW)
    assert _line(text, "Verdict:") == "Verdict: Failed"
    results = text[text.index("Results:"):text.index("Conditions:")]
    assert _line(results, "TASK") == "TASK METRIC VALUE THRESHOLD PASSED"
    assert _line(results, "heldout") == "heldout perplexity 42.12 <= 400 passed"
    assert _line(results, "who-said-it") == "who-said-it acc 0.125 >= 0.2 failed"
    assert text.rstrip().endswith("Events:  <none>")


def test_describe_shows_the_other_status_fields_and_waiting_for() -> None:
    text = describe(dataset(), [], NOW)
    assert _line(text, "Documents Kept:") == "Documents Kept: 1200"
    assert _line(text, "quality.minWords:") == "quality.minWords: 300"  # a map key, not a field: kept as written
    assert _line(text, "Artifact URI:") == "Artifact URI: artifacts/datasets/shakespeare"
    waiting = describe(lifecycle()[2], [], NOW)
    assert _line(waiting, "Waiting For:") == "Waiting For: PretrainJob tiny-shakespeare"
    assert "Conditions:  <none>" in waiting


# --- find -------------------------------------------------------------------------------------------------

def test_find_by_name_or_kind_and_name(store: Path) -> None:
    resources = load_resources(store)
    assert find(resources, "shakespeare")["kind"] == "Dataset"
    assert find(resources, "ptj/tiny-shakespeare")["kind"] == "PretrainJob"
    assert find(resources, "Deployment/tiny-shakespeare")["kind"] == "Deployment"
    assert find(resources, "evaluation.llmops.dev/tiny-shakespeare-lora")["kind"] == "Evaluation"


def test_find_refuses_to_guess_between_kinds(store: Path) -> None:
    with pytest.raises(ValueError, match="ambiguous") as error:
        find(load_resources(store), "tiny-shakespeare")
    assert "PretrainJob/tiny-shakespeare" in str(error.value) and "Deployment/tiny-shakespeare" in str(error.value)


def test_find_unknown_lists_what_exists(store: Path) -> None:
    with pytest.raises(ValueError, match="no resource 'nope'") as error:
        find(load_resources(store), "nope")
    assert "Dataset/shakespeare" in str(error.value) and "FineTune/tiny-shakespeare-lora" in str(error.value)
    with pytest.raises(ValueError, match="no resource 'ft/shakespeare'"):
        find(load_resources(store), "ft/shakespeare")
    with pytest.raises(ValueError, match="unknown kind 'job'"):
        find(load_resources(store), "job/shakespeare")
    with pytest.raises(ValueError, match="nothing yet"):
        find([], "shakespeare")


def test_a_finished_run_is_described_with_its_artifact() -> None:
    done = pretrain(completed=200, phase=Phase.SUCCEEDED, reason="Succeeded",
                    artifact="/store/artifacts/models/tiny-shakespeare")
    assert _line(describe(done, [], NOW), "Artifact URI:") == "Artifact URI: /store/artifacts/models/tiny-shakespeare"
