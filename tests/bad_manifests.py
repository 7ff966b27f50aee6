"""Wrong manifests a user could write, each with the field its rejection must name.

One table, read by the offline admission tests, the pydantic tests and the API-server tests, so the
three checkers are held to the same cases. Each case patches a valid lifecycle example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import DELETE, example, patched


@dataclass(frozen=True)
class BadCase:
    id: str
    kind: str
    patch: dict[str, Any]
    want_path: str
    """The rejection must point at this field (a path prefix, as the API server prints it)."""

    def manifest(self) -> dict[str, Any]:
        return patched(example(self.kind), self.patch)

    @property
    def want_field(self) -> str:
        """The last field name of want_path, which every checker's message must contain."""
        return self.want_path.split(".")[-1].split("[")[0]


def _spec(**fields: Any) -> dict[str, Any]:
    return {"spec": fields}


BAD_CASES = [
    # Dataset
    BadCase("dataset-missing-sources", "Dataset", _spec(sources=DELETE), "spec.sources"),
    BadCase("dataset-empty-sources", "Dataset", _spec(sources=[]), "spec.sources"),
    BadCase("dataset-duplicate-source-names", "Dataset",
            _spec(sources=[{"name": "a", "uri": "/data/a"}, {"name": "a", "uri": "/data/b"}]), "spec.sources"),
    BadCase("dataset-unknown-builtin-corpus", "Dataset",
            _spec(sources=[{"name": "a", "uri": "builtin://wikipedia"}]), "spec.sources[0].uri"),
    BadCase("dataset-bad-source-name", "Dataset",
            _spec(sources=[{"name": "My Source", "uri": "/data"}]), "spec.sources[0].name"),
    BadCase("dataset-two-tokenizer-sources", "Dataset",
            _spec(tokenizer={"train": {"vocabSize": 4096}, "uri": "/models/tok"}), "spec.tokenizer"),
    BadCase("dataset-bands-do-not-divide", "Dataset", _spec(dedup={"near": {"bands": 7}}), "spec.dedup.near.bands"),
    BadCase("dataset-min-words-above-max", "Dataset",
            _spec(filters={"quality": {"minWords": 500, "maxWords": 100}}), "spec.filters.quality.minWords"),
    BadCase("dataset-zero-workers", "Dataset", _spec(execution={"workers": 0}), "spec.execution.workers"),
    BadCase("dataset-scratch-without-streaming", "Dataset", _spec(execution={"scratchSizeLimit": "100Gi"}),
            "spec.execution.scratchSizeLimit"),
    BadCase("dataset-zero-streaming-partitions", "Dataset", _spec(execution={"streaming": {"partitions": 0}}),
            "spec.execution.streaming.partitions"),
    BadCase("dataset-uint16-vocabulary-too-large", "Dataset",
            _spec(tokenDtype="uint16", tokenizer={"train": {"vocabSize": 100000}}), "spec.tokenDtype"),
    # PretrainJob
    BadCase("pretrain-missing-data", "PretrainJob", _spec(data=DELETE), "spec.data"),
    BadCase("pretrain-two-data-sources", "PretrainJob",
            _spec(data={"dataset": "shakespeare", "uri": "s3://bucket/shards"}), "spec.data"),
    BadCase("pretrain-hidden-not-multiple-of-heads", "PretrainJob",
            _spec(model={"hiddenSize": 130}), "spec.model.hiddenSize"),
    BadCase("pretrain-kv-heads-do-not-divide", "PretrainJob", _spec(model={"kvHeads": 3}), "spec.model.kvHeads"),
    BadCase("pretrain-no-length", "PretrainJob", _spec(training={"maxSteps": DELETE}), "spec.training.maxSteps"),
    BadCase("pretrain-steps-and-budget", "PretrainJob", _spec(computeBudget={"flops": 1e15}),
            "spec.training.maxSteps"),
    BadCase("pretrain-negative-nodes", "PretrainJob", _spec(nodePool={"nodes": -1}), "spec.nodePool.nodes"),
    BadCase("pretrain-unknown-precision", "PretrainJob", _spec(training={"precision": "fp8"}),
            "spec.training.precision"),
    BadCase("pretrain-misspelt-field", "PretrainJob", _spec(nodepool={"nodes": 2}), "spec.nodepool"),
    BadCase("pretrain-negative-learning-rate", "PretrainJob",
            _spec(training={"optimizer": {"learningRate": -0.1}}), "spec.training.optimizer.learningRate"),
    BadCase("pretrain-warmup-longer-than-run", "PretrainJob",
            _spec(training={"schedule": {"warmupSteps": 500}}), "spec.training.schedule.warmupSteps"),
    BadCase("pretrain-bad-quantity", "PretrainJob",
            _spec(nodePool={"resources": {"requests": {"cpu": "two"}}}), "spec.nodePool.resources.requests.cpu"),
    BadCase("pretrain-name-too-long", "PretrainJob", {"metadata": {"name": "x" * 51}}, "metadata.name"),
    BadCase("pretrain-yarn-without-original-context", "PretrainJob",
            _spec(model={"ropeScaling": {"type": "yarn", "factor": 2}}),
            "spec.model.ropeScaling.originalContextLength"),
    BadCase("pretrain-rope-factor-below-one", "PretrainJob",
            _spec(model={"ropeScaling": {"type": "linear", "factor": 0.5}}), "spec.model.ropeScaling.factor"),
    BadCase("pretrain-init-beta-fast-on-linear", "PretrainJob",
            _spec(model=DELETE, init={"pretrainJob": "parent", "contextLength": 512,
                                      "ropeScaling": {"type": "linear", "factor": 2, "betaFast": 16}}),
            "spec.init.ropeScaling.betaFast"),
    BadCase("pretrain-init-and-model-shape", "PretrainJob", _spec(init={"pretrainJob": "parent"}), "spec.model"),
    BadCase("pretrain-init-with-budget", "PretrainJob",
            _spec(model=DELETE, init={"uri": "/models/base"}, training={"maxSteps": DELETE},
                  computeBudget={"flops": 1e15}), "spec.computeBudget"),
    BadCase("pretrain-init-two-models", "PretrainJob",
            _spec(model=DELETE, init={"pretrainJob": "parent", "uri": "/models/base"}), "spec.init"),
    BadCase("pretrain-choose-shape-unknown-field", "PretrainJob",
            _spec(training={"maxSteps": DELETE}, computeBudget={"flops": 1e15, "chooseShapes": True}),
            "spec.computeBudget.chooseShapes"),
    # FineTune
    BadCase("finetune-unknown-method", "FineTune", _spec(method="rlhf", lora=DELETE, sft=DELETE), "spec.method"),
    BadCase("finetune-two-base-models", "FineTune",
            _spec(base={"pretrainJob": "tiny-shakespeare", "uri": "/models/llama"}), "spec.base"),
    BadCase("finetune-no-base-model", "FineTune", _spec(base={"pretrainJob": DELETE}), "spec.base"),
    BadCase("finetune-lora-settings-with-sft", "FineTune", _spec(method="sft"), "spec.lora"),
    BadCase("finetune-classification-without-labels", "FineTune",
            _spec(method="classification", lora=DELETE, sft=DELETE), "spec.classification"),
    BadCase("finetune-one-label", "FineTune",
            _spec(method="classification", lora=DELETE, sft=DELETE, classification={"labels": ["spam"]}),
            "spec.classification.labels"),
    BadCase("finetune-steps-and-epochs", "FineTune", _spec(training={"epochs": 2}), "spec.training.epochs"),
    BadCase("finetune-lora-rank-zero", "FineTune", _spec(lora={"rank": 0}), "spec.lora.rank"),
    BadCase("finetune-distill-without-teacher", "FineTune", _spec(method="distill", lora=DELETE, sft=DELETE),
            "spec.distill"),
    BadCase("finetune-distill-teacher-two-models", "FineTune",
            _spec(method="distill", lora=DELETE, sft=DELETE, distill={"teacher": {"fineTune": "a", "uri": "/m"}}),
            "spec.distill.teacher"),
    BadCase("finetune-distill-temperature-zero", "FineTune",
            _spec(method="distill", lora=DELETE, sft=DELETE,
                  distill={"teacher": {"fineTune": "a"}, "temperature": 0}), "spec.distill.temperature"),
    BadCase("finetune-quantize-unknown-scheme", "FineTune",
            _spec(method="quantize", lora=DELETE, sft=DELETE, quantize={"scheme": "int3"}), "spec.quantize.scheme"),
    BadCase("finetune-quantize-group-size-with-int8", "FineTune",
            _spec(method="quantize", lora=DELETE, sft=DELETE, quantize={"scheme": "int8", "groupSize": 64}),
            "spec.quantize.groupSize"),
    BadCase("finetune-quantize-with-lora-settings", "FineTune", _spec(method="quantize", sft=DELETE), "spec.lora"),
    BadCase("finetune-prune-without-settings", "FineTune", _spec(method="prune", lora=DELETE, sft=DELETE),
            "spec.prune"),
    BadCase("finetune-prune-depth-without-layers", "FineTune",
            _spec(method="prune", lora=DELETE, sft=DELETE, prune={"axis": "depth", "intermediateSize": 128}),
            "spec.prune.numLayers"),
    BadCase("finetune-sft-without-data", "FineTune", _spec(data=DELETE), "spec.data"),
    BadCase("finetune-reward-with-dpo-settings", "FineTune",
            _spec(method="reward", lora=DELETE, sft=DELETE, dpo={"beta": 0.1}), "spec.dpo"),
    # Evaluation
    BadCase("evaluation-no-tasks", "Evaluation", _spec(tasks=[], thresholds=[]), "spec.tasks"),
    BadCase("evaluation-threshold-for-unknown-task", "Evaluation",
            _spec(thresholds=[{"task": "nope", "metric": "acc", "min": 0.5}]), "spec.thresholds"),
    BadCase("evaluation-threshold-min-and-max", "Evaluation",
            _spec(thresholds=[{"task": "heldout", "metric": "perplexity", "min": 1, "max": 9}]),
            "spec.thresholds[0]"),
    BadCase("evaluation-relative-without-baseline", "Evaluation",
            _spec(baseline=DELETE, thresholds=[{"task": "heldout", "metric": "perplexity", "relativeTo": "baseline"}]),
            "spec.baseline"),
    BadCase("evaluation-unknown-metric", "Evaluation",
            _spec(thresholds=[{"task": "heldout", "metric": "bleu", "min": 0.1}]), "spec.thresholds[0].metric"),
    BadCase("evaluation-lm-eval-without-task-name", "Evaluation",
            _spec(tasks=[{"name": "hellaswag", "type": "lmEval"}], thresholds=[]), "spec.tasks[0].lmEvalTask"),
    BadCase("evaluation-task-without-data", "Evaluation",
            _spec(tasks=[{"name": "heldout", "type": "perplexity"}], thresholds=[]), "spec.tasks[0]"),
    BadCase("evaluation-judge-without-win-rate", "Evaluation", _spec(judge={"fineTune": "reward-model"}),
            "spec.judge"),
    BadCase("evaluation-judge-two-models", "Evaluation",
            _spec(judge={"fineTune": "reward-model", "uri": "/models/rm"},
                  tasks=[{"name": "duel", "type": "winRate", "uri": "/data/prompts.jsonl"}], thresholds=[]),
            "spec.judge"),
    # Deployment
    BadCase("deployment-negative-replicas", "Deployment", _spec(replicas=-1), "spec.replicas"),
    BadCase("deployment-missing-gate", "Deployment", _spec(gate=DELETE), "spec.gate"),
    BadCase("deployment-canary-weights-out-of-order", "Deployment",
            _spec(canary={"steps": [{"weight": 50}, {"weight": 10}]}), "spec.canary.steps"),
    BadCase("deployment-canary-weights-repeated", "Deployment",
            _spec(canary={"steps": [{"weight": 50}, {"weight": 50}]}), "spec.canary.steps"),
    BadCase("deployment-canary-weight-above-100", "Deployment",
            _spec(canary={"steps": [{"weight": 50}, {"weight": 150}]}), "spec.canary.steps[1].weight"),
    BadCase("deployment-canary-pause-in-words", "Deployment",
            _spec(canary={"steps": [{"weight": 50, "pause": "five minutes"}]}), "spec.canary.steps[0].pause"),
    BadCase("deployment-error-rate-above-one", "Deployment",
            _spec(canary={"steps": [{"weight": 50}], "analysis": {"maxErrorRate": 5}}),
            "spec.canary.analysis.maxErrorRate"),
    BadCase("deployment-two-model-sources", "Deployment",
            _spec(model={"fineTune": "a", "pretrainJob": "b"}), "spec.model"),
]
