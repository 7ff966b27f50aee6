"""Progress lines are one contract (llmops.trainer.config.progress): what the trainers and the data pipeline
print is exactly what the operator's parse_progress reads back, and anything else in a log is no report."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from llmops.operator.reconcile.progress import parse_progress
from llmops.trainer.config.progress import ProgressLine, TrainLine, parse_lines
from llmops.trainer.data.progress import Progress
from llmops.trainer.train.metrics import MetricsLog

JOB = "tiny-1"


def metrics_log() -> tuple[MetricsLog, io.StringIO]:
    stream = io.StringIO()
    return MetricsLog(stream=stream), stream


def test_what_the_trainer_prints_is_what_the_operator_shows() -> None:
    log, stream = metrics_log()
    log.report(step=10, totalSteps=100, loss=3.5, learningRate=1e-3, gradNorm=0.9, tokensPerSecond=2048.0,
               tokensSeen=20480, mfu=None, etaSeconds=45)
    log.report(step=10, validationLoss=3.75)

    report = parse_progress(stream.getvalue(), "PretrainJob", JOB)

    assert report is not None
    assert report.progress.to_wire() == {"completed": 10, "total": 100, "unit": "steps", "percent": "10%",
                                         "etaSeconds": 45}
    assert report.metrics is not None and report.metrics.to_wire() == {
        "step": 10, "loss": 3.5, "validationLoss": 3.75, "learningRate": 1e-3, "gradNorm": 0.9,
        "tokensPerSecond": 2048.0, "tokensSeen": 20480}


def test_lines_start_with_the_event_and_carry_no_nulls() -> None:
    log, stream = metrics_log()
    log.report(step=1, loss=2.0, tokensPerSecond=None)
    line = stream.getvalue().splitlines()[0]
    assert line.startswith('{"event": "train", "time": ')
    assert set(json.loads(line)) == {"event", "time", "step", "loss"}
    assert log.history == [json.loads(line)]  # the model card's history is the wire form too


def test_a_fine_tune_method_figure_reaches_the_log() -> None:
    log, stream = metrics_log()
    log.report(step=3, totalSteps=6, loss=0.7, rewardMargin=0.25)
    log.report(step=3, loss=0.5, accuracy=0.75)
    assert [line.reward_margin for line in parse_lines(stream.getvalue(), TrainLine)] == [0.25, None]
    assert parse_lines(stream.getvalue(), TrainLine)[1].accuracy == 0.75


def test_an_undeclared_figure_is_a_programming_error_named_at_once() -> None:
    log, stream = metrics_log()
    with pytest.raises(TypeError, match="chosenReward is not a TrainLine field"):
        log.report(step=1, loss=1.0, chosenReward=0.5)
    assert stream.getvalue() == "" and log.history == []


def test_a_diverged_step_is_printed_for_people_but_is_no_report() -> None:
    log, stream = metrics_log()
    log.report(step=40, totalSteps=200, loss=3.25)
    log.report(step=41, loss=float("nan"), gradNorm=float("inf"), error="NonFiniteLoss")

    last = stream.getvalue().splitlines()[-1]
    assert '"loss": NaN' in last and '"gradNorm": Infinity' in last and '"error": "NonFiniteLoss"' in last
    report = parse_progress(stream.getvalue(), "PretrainJob", JOB)
    assert report is not None and report.progress.completed == 40
    assert report.metrics is not None and report.metrics.loss == 3.25


def test_what_the_data_pipeline_prints_is_what_the_operator_shows() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.report("read", 500, None, "documents")
    progress.report("clean", 125, 500, "documents")

    lines = parse_lines(stream.getvalue(), ProgressLine)
    assert [(line.stage, line.completed, line.total) for line in lines] == [("read", 500, None), ("clean", 125, 500)]
    assert all(line.elapsed_seconds is not None and line.elapsed_seconds >= 0 for line in lines)
    report = parse_progress(stream.getvalue(), "Dataset", JOB)
    assert report is not None
    assert (report.progress.completed, report.progress.total, report.progress.unit, report.progress.percent) == \
        (125, 500, "documents (clean)", "25%")


def test_a_disabled_writer_prints_nothing() -> None:
    stream = io.StringIO()
    Progress(enabled=False, stream=stream).report("read", 1, None, "documents")
    MetricsLog(stream=stream, enabled=False).report(step=1, loss=1.0)
    assert stream.getvalue() == ""


TRAIN = TrainLine(time=10.0, step=5, loss=1.5).to_line()


@pytest.mark.parametrize(
    ("text", "want_steps"),
    [
        pytest.param(TRAIN, [5], id="a line the writer made"),
        pytest.param(f"W1202 some torch warning\n{TRAIN}\nrendezvous ok", [5], id="plain text around it"),
        pytest.param(f'{TRAIN}\n{{"event": "train", "step": 6, "lo', [5], id="a cut last line"),
        pytest.param(ProgressLine(completed=3).to_line(), [], id="another kind"),
        pytest.param('{"event": "train", "step": "many"}', [], id="a field of the wrong type"),
        pytest.param('{"event": "train", "step": -1}', [], id="a field out of range"),
        pytest.param('{"event": "train", "step": 7, "loss": 1e999}', [], id="a number JSON reads as infinity"),
        pytest.param('{"step": 7}', [], id="no event"),
        pytest.param('[1, 2]\nnull\n"text"\n{not json}', [], id="JSON that is no object, and no JSON"),
        pytest.param('{"event": "train", "step": 8, "fromANewerWriter": {"x": 1}}', [8], id="unknown fields ignored"),
    ],
)
def test_the_reader_keeps_only_well_formed_finite_lines(text: str, want_steps: list[int]) -> None:
    assert [line.step for line in parse_lines(text, TrainLine)] == want_steps


def test_lines_round_trip_through_the_wire() -> None:
    lines: list[Any] = [TrainLine(time=1.5, step=2, total_steps=4, loss=0.5, reward_margin=0.1),
                        ProgressLine(stage="pack", completed=9, unit="tokens", rate=3.0, elapsed_seconds=3.0)]
    for line in lines:
        assert parse_lines(line.to_line(), type(line)) == [line]
