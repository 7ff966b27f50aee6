"""The terminal view of a local run: plain lines on change (CI logs), a live table on a terminal, the summary."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.local.display import Display, card_rows, local_path, progress_line, resource_table, summary
from tests.local_store import dataset, evaluation, finetune, lifecycle, pretrain, write_store


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(clock: Clock | None = None, width: int = 80) -> tuple[Display, io.StringIO]:
    out = io.StringIO()
    display = Display(Console(file=out, force_terminal=False, width=width), progress_every=10,
                      clock=clock or Clock())
    return display, out


def lines(out: io.StringIO) -> list[str]:
    """What was printed since the last call."""
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text.splitlines()


# --- Plain mode -------------------------------------------------------------------------------------------

def test_the_mode_follows_the_console() -> None:
    assert Display(Console(file=io.StringIO(), force_terminal=False)).live is False
    assert Display(Console(file=io.StringIO(), force_terminal=True)).live is True
    assert Display(Console(file=io.StringIO(), force_terminal=True), live=False).live is False


def test_plain_mode_prints_a_line_when_the_phase_or_ready_reason_changes() -> None:
    display, out = plain()
    display.update([dataset(), finetune()])
    assert lines(out) == ["Dataset/shakespeare Succeeded (Succeeded: 1200 documents kept)",
                          "FineTune/tiny-shakespeare-lora Waiting (PretrainJob tiny-shakespeare)"]
    display.update([dataset(), finetune()])
    assert lines(out) == []  # nothing changed
    display.update([dataset(), finetune(), pretrain(completed=0, reason="Starting")])
    assert lines(out) == ["PretrainJob/tiny-shakespeare Running (Starting: torchrun on 1 process)"]
    display.update([pretrain(completed=0, reason="Training")])
    assert lines(out) == ["PretrainJob/tiny-shakespeare Running (Training: torchrun on 1 process)"]


def test_progress_lines_come_at_most_every_progress_every_seconds() -> None:
    clock = Clock()
    display, out = plain(clock, width=40)  # a narrow log does not wrap the lines
    display.update([pretrain(completed=10)])
    assert lines(out) == ["PretrainJob/tiny-shakespeare Running (Training: torchrun on 1 process)"]
    clock.now += 5
    display.update([pretrain(completed=20)])
    assert lines(out) == []
    clock.now += 5
    display.update([pretrain(completed=40, loss=5.12345)])
    assert lines(out) == ["PretrainJob/tiny-shakespeare Running step 40/200 loss 5.123 2.1 steps/s eta 1m16s"]
    clock.now += 9.5
    display.update([pretrain(completed=60)])
    assert lines(out) == []
    clock.now += 30
    display.update([pretrain(completed=60)])
    assert lines(out) == ["PretrainJob/tiny-shakespeare Running step 60/200 loss 5.123 2.1 steps/s eta 1m16s"]
    clock.now += 30
    display.update([pretrain(completed=60)])
    assert lines(out) == []  # stalled: the same line again says nothing new


def test_a_phase_change_is_printed_at_once_and_ends_progress_lines() -> None:
    clock = Clock()
    display, out = plain(clock)
    display.update([pretrain(completed=190)])
    clock.now += 1
    done = pretrain(completed=200, phase=Phase.SUCCEEDED, reason="Succeeded", artifact="/tmp/model")
    display.update([done])
    assert lines(out)[-1] == "PretrainJob/tiny-shakespeare Succeeded (Succeeded: torchrun on 1 process)"
    clock.now += 60
    display.update([done])
    assert lines(out) == []  # progress lines are for running resources only


def test_a_progress_line_needs_progress() -> None:
    assert progress_line(dataset()) == ""
    expected = "PretrainJob/tiny-shakespeare Running step 40/200 loss 5.123 2.1 steps/s eta 1m16s"
    assert progress_line(pretrain()) == expected


def test_log_prints_text_as_written() -> None:
    display, out = plain()
    display.log("[rank0] loss [bold]1.0[/bold]")
    assert lines(out) == ["[rank0] loss [bold]1.0[/bold]"]


# --- Live mode --------------------------------------------------------------------------------------------

def test_live_mode_renders_a_row_per_resource() -> None:
    out = io.StringIO()
    with Display(Console(file=out, force_terminal=True, width=160)) as display:
        display.update(lifecycle())
        display.log("runner: started PretrainJob/tiny-shakespeare")
        display.update([pretrain(completed=60)])
    text = out.getvalue()
    assert "runner: started PretrainJob/tiny-shakespeare" in text
    for expected in ("KIND", "LOSS", "ETA", "MESSAGE", "Deployment", "tiny-shakespeare-lora", "Succeeded",
                     "40/200 steps", "60/200 steps", "5.123", "2.1 steps/s", "1m16s", "torchrun on 1 process",
                     "PretrainJob tiny-shakespeare"):
        assert expected in text


def test_the_live_table_keeps_one_line_per_resource_when_narrow() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    job = pretrain()
    job["status"]["conditions"][0]["message"] = "a long message " * 10
    console.print(resource_table([job, dataset()]))
    body = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(body) == 3  # header and two rows
    assert body[1].rstrip().endswith("…") and "40/200 steps" in body[1]
    assert all(len(line) <= 100 for line in body)


# --- Summary ----------------------------------------------------------------------------------------------

CARD = """# Model card

Trained by llmops-operator.

## Run summary

| item | value |
|---|---|
| parameters | 412160 |
| steps | 200 |
| final loss | 4.2 |

![loss curve](loss-curve.png)
"""


@pytest.fixture
def finished(tmp_path: Path) -> tuple[list[dict], Path]:
    model = tmp_path / "artifacts" / "default" / "pretrainjob" / "tiny-shakespeare"
    model.mkdir(parents=True)
    for name, content in (("config.json", "{}"), ("model-card.md", CARD)):
        (model / name).write_text(content)
    (model / "loss-curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    job = pretrain(completed=200, phase=Phase.SUCCEEDED, reason="Succeeded", artifact=f"file://{model}")
    resources = [dataset(), job, evaluation()]
    write_store(tmp_path, resources)
    return resources, model


def test_summary_shows_phases_artifacts_model_card_and_verdict(finished: tuple[list[dict], Path],
                                                               tmp_path: Path) -> None:
    resources, model = finished
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=250).print(summary(resources, tmp_path))
    text = out.getvalue()
    assert "\x1b[" not in text  # plain text for a log
    squeezed = [" ".join(line.split()) for line in text.splitlines()]
    assert "KIND NAME PHASE ARTIFACT" in squeezed
    assert "Dataset shakespeare Succeeded artifacts/datasets/shakespeare" in squeezed
    assert f"PretrainJob tiny-shakespeare Succeeded file://{model}" in squeezed
    assert "Evaluation tiny-shakespeare-lora Succeeded" in squeezed
    assert f"Model of PretrainJob/tiny-shakespeare: {model}" in squeezed
    assert f"model card {model / 'model-card.md'}" in squeezed
    assert "parameters 412160" in squeezed and "final loss 4.2" in squeezed
    assert f"loss curve {model / 'loss-curve.png'}" in squeezed
    assert "Evaluation/tiny-shakespeare-lora: Failed" in squeezed
    assert "TASK METRIC VALUE THRESHOLD PASSED" in squeezed
    assert "heldout perplexity 42.12 <= 400 passed" in squeezed
    assert "who-said-it acc 0.125 >= 0.2 failed" in squeezed


def test_finish_prints_the_summary_unwrapped_in_a_narrow_log(finished: tuple[list[dict], Path],
                                                               tmp_path: Path) -> None:
    resources, model = finished
    display, out = plain(width=40)
    display.finish(resources, tmp_path)
    text = out.getvalue()
    assert text.rstrip("\n") == str(summary(resources, tmp_path))
    whole = [line for line in text.splitlines() if line.split()[:2] == ["model", "card"]]
    assert whole == [whole[0]] and whole[0].endswith(str(model / "model-card.md"))  # though over 40 columns


def test_summary_renders_on_a_terminal_too(finished: tuple[list[dict], Path], tmp_path: Path) -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120).print(summary(finished[0], tmp_path))
    assert "model-card.md" in out.getvalue() and "who-said-it" in out.getvalue()


def test_only_local_model_directories_are_shown(tmp_path: Path) -> None:
    assert local_path("s3://bucket/models/x", tmp_path) is None
    assert local_path("pvc://claim/models/x", tmp_path) is None
    assert local_path("file:///srv/models/x", tmp_path) == Path("/srv/models/x")
    assert local_path("artifacts/x", tmp_path) == tmp_path / "artifacts" / "x"
    remote = pretrain(phase=Phase.SUCCEEDED, artifact="s3://bucket/models/tiny")
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=200).print(summary([remote], tmp_path))
    assert "Model of" not in out.getvalue()


def test_card_rows_are_the_run_summary_table() -> None:
    assert card_rows(CARD) == [("parameters", "412160"), ("steps", "200"), ("final loss", "4.2")]
    assert card_rows(CARD, limit=1) == [("parameters", "412160")]
    assert card_rows("# no table here\n") == []
