"""What an Evaluation measures and the thresholds that decide its verdict."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from .base import ApiModel, Rule, StatusModel
from .types import Name


class TaskType(StrEnum):
    PERPLEXITY = "perplexity"
    MULTIPLE_CHOICE = "multipleChoice"
    EXACT_MATCH = "exactMatch"
    CLASSIFICATION = "classification"
    WIN_RATE = "winRate"
    LM_EVAL = "lmEval"


ENDPOINT_TASKS = (TaskType.PERPLEXITY, TaskType.MULTIPLE_CHOICE, TaskType.EXACT_MATCH)
"""Task types an endpoint can be scored on: they need only log-probabilities of text (echo + logprobs) and
greedy generations. Classification needs the model's classification head, winRate a baseline model loaded
from its weights, lmEval the model in-process."""

ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def api_base_url(url: str) -> str:
    """The OpenAI API root of a server: `http://host:8000`, `http://host:8000/` and `http://host:8000/v1`
    all mean `http://host:8000/v1`, where the routes (/completions, /models) hang."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class Metric(StrEnum):
    """Metric names, as lm-evaluation-harness spells them."""

    PERPLEXITY = "perplexity"
    BITS_PER_BYTE = "bits_per_byte"
    ACC = "acc"
    ACC_NORM = "acc_norm"
    EXACT_MATCH = "exact_match"
    F1 = "f1"
    WIN_RATE = "win_rate"

    @property
    def higher_is_better(self) -> bool:
        return self not in (Metric.PERPLEXITY, Metric.BITS_PER_BYTE)


class TaskSettings(ApiModel):
    """How one task is scored (its data location is added by the Evaluation spec)."""

    name: Name
    """Unique name of the task within the Evaluation; thresholds refer to it."""

    type: TaskType
    """perplexity (and bits per byte) on text; multipleChoice (acc, acc_norm) on lm-eval-style JSONL;
    exactMatch and f1 on short generations; classification (acc, f1); winRate against the baseline (by F1
    against the references, or by a judge's rewards);
    lmEval runs an lm-evaluation-harness task from local data."""

    lm_eval_task: str | None = Field(default=None, min_length=1, max_length=256)
    """lm-evaluation-harness task name (type lmEval)."""

    limit: int | None = Field(default=None, ge=1)
    """Score at most this many examples (documents for perplexity)."""

    num_fewshot: int = Field(default=0, ge=0, le=64)
    """Few-shot examples prepended to each prompt."""

    stride: int | None = Field(default=None, ge=1)
    """Sliding-window stride for perplexity, in tokens. Unset: half the model's context length."""

    max_new_tokens: int = Field(default=64, ge=1, le=8192)
    """Longest generation for exactMatch and winRate."""

    cel_rules = (
        Rule(
            "(self.type == 'lmEval') == has(self.lmEvalTask)",
            "lmEvalTask is required for type lmEval and not allowed for other types",
            field_path=".lmEvalTask",
        ),
    )


class Baseline(StrEnum):
    ABSOLUTE = "absolute"
    BASELINE = "baseline"


class Threshold(ApiModel):
    """A pass condition on one metric of one task. All thresholds must hold for the verdict Passed."""

    task: Name
    """Name of the task the metric comes from."""

    metric: Metric
    """Metric to check."""

    min: float | None = None
    """Absolute floor: passes when value >= min."""

    max: float | None = None
    """Absolute ceiling: passes when value <= max."""

    relative_to: Baseline = Baseline.ABSOLUTE
    """`baseline`: compare with the baseline model's value on the same task instead of min/max."""

    tolerance: float = Field(default=0.0, ge=0)
    """With relativeTo baseline: how much worse than the baseline (in the metric's units) still passes."""

    cel_rules = (
        Rule(
            "self.relativeTo == 'baseline' ? !has(self.min) && !has(self.max) : has(self.min) != has(self.max)",
            "set exactly one of min or max, or set relativeTo: baseline (with an optional tolerance) "
            "and neither",
        ),
    )


class EvalRunConfig(ApiModel):
    """Run-wide evaluation settings."""

    seed: int = Field(default=1234, ge=0, le=2**31 - 1)
    """Seed for sampling and few-shot selection; the same model and data give the same numbers."""

    batch_size: int = Field(default=8, ge=1, le=4096)
    """Sequences scored together."""


class TaskRun(TaskSettings):
    """A task with its data resolved by the operator to a path or fsspec URI (pvc:// mapped to its mount)."""

    data_uri: str | None = Field(default=None, min_length=1)
    """Text/JSONL file or directory for the task; for perplexity also a Dataset output directory."""


class EndpointTarget(ApiModel):
    """A live OpenAI-compatible server to score over HTTP instead of loading weights (llmops-serve, vLLM).

    Log-likelihoods come from `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 0`; the server's
    tokenizer stays unknown, so a continuation's tokens are found by their character offsets."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    """Base URL of the API, e.g. http://canary.team.svc:8000/v1 (a URL without the /v1 gets it)."""

    model: str = Field(min_length=1, max_length=256)
    """Served model name that requests carry (what the server's /v1/models lists)."""

    document_prefix: str = Field(default="", max_length=256)
    """Text sent before each perplexity document so that its first token is scored too: the model's
    end-of-text token spelled out, e.g. `<|endoftext|>` for models trained by llmops (the local scorer
    scores after that token). Empty: a document's first token is scored only if the server puts a start
    token before it itself (vLLM does for Llama tokenizers)."""

    @field_validator("url")
    @classmethod
    def _api_root(cls, url: str) -> str:
        return api_base_url(url)


class EndpointConfig(EndpointTarget):
    """The endpoint as the evaluation workload reads it: where, which model, and how to talk to it."""

    api_key_env: str | None = Field(default=None, max_length=256, pattern=ENV_VAR_PATTERN)
    """Environment variable holding the API key, sent as `Authorization: Bearer <key>`. Unset: no key."""

    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Longest wait for one response; a request that times out is retried like a 5xx."""

    concurrency: int = Field(default=4, ge=1, le=256)
    """Requests in flight at once (a server over its limit answers 429, which is retried after a pause)."""

    context_length: int | None = Field(default=None, ge=8, le=1 << 24)
    """Longest prompt the server accepts, in tokens; perplexity windows are sized by it. Unset: what
    /v1/models reports (llmops-serve's `max_prompt_tokens`, else vLLM's `max_model_len`); without either, each
    document is sent whole."""


class EvalJobConfig(EvalRunConfig):
    """What the evaluation workload reads from its config file."""

    model_uri: str | None = Field(default=None, min_length=1)
    """Hugging Face-format model directory under evaluation (a path or fsspec URI). Or set `endpoint`."""

    endpoint: EndpointConfig | None = None
    """A live server to evaluate over HTTP instead of a model directory (task types perplexity,
    multipleChoice and exactMatch)."""

    baseline_uri: str | None = Field(default=None, min_length=1)
    """Model to compare with (relativeTo baseline thresholds, winRate)."""

    judge_uri: str | None = Field(default=None, min_length=1)
    """Reward model that judges winRate tasks (a one-label sequence-classification model, e.g. a FineTune of
    method reward): a prompt is won when it rewards our answer above the baseline's. Unset: the answer with the
    higher F1 against the row's references wins."""

    tasks: list[TaskRun] = Field(min_length=1, max_length=64)
    """Tasks to score."""

    thresholds: list[Threshold] = Field(default_factory=list, max_length=128)
    """Pass conditions."""

    output_uri: str = Field(min_length=1)
    """Directory for results.json and the report."""

    name: str = Field(default="evaluation", min_length=1, max_length=253)
    """Name of the Evaluation (in the report and the model card)."""

    cel_rules = (
        Rule(
            "has(self.modelUri) != has(self.endpoint)",
            "set exactly one of modelUri (a model directory to load) or endpoint (a server to score over HTTP)",
        ),
        Rule(
            "!has(self.endpoint) || !has(self.baselineUri)",
            "baselineUri is scored from its weights, which an evaluation of an endpoint does not load: compare "
            "an endpoint with absolute thresholds (min or max)",
            field_path=".baselineUri",
        ),
        Rule(
            "!has(self.judgeUri) || self.tasks.exists(k, k.type == 'winRate')",
            "judgeUri judges winRate tasks only: add a task of type winRate or remove judgeUri",
            field_path=".judgeUri",
        ),
        Rule(
            "!has(self.endpoint) || !has(self.judgeUri)",
            "judgeUri compares with a baseline's generations, which an evaluation of an endpoint does not make: "
            "remove judgeUri",
            field_path=".judgeUri",
        ),
    )


class MetricResult(StatusModel):
    """One measured metric, with the threshold it was held to."""

    task: str
    """Task name."""

    metric: Metric
    """Metric name."""

    value: float | None = None
    """Measured value; unset when the task did not measure this metric (the threshold then fails)."""

    baseline_value: float | None = None
    """The baseline model's value, when compared."""

    threshold: str | None = None
    """The condition, e.g. ">= 0.6" or "<= baseline + 0.5"."""

    margin: float | None = None
    """How far inside (positive) or outside (negative) the threshold the value is."""

    passed: bool | None = None
    """Whether the threshold held; unset when no threshold applies."""
