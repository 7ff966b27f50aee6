"""Export a trained model in Hugging Face format, with tokenizer, model card, lineage and loss curve."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

MODEL_INPUTS = ["input_ids", "attention_mask"]
"""What a causal LM's forward takes. A tokenizer that also returns `token_type_ids` breaks the standard idiom
`model.generate(**tokenizer(text, return_tensors="pt"))`."""
FILE_MODE, DIRECTORY_MODE = 0o644, 0o755
"""Exported artifacts are world-readable: the server reading them may run as another user on a shared volume."""


def wrap_tokenizer(tokenizer_file: Path, eos_token: str) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a Dataset's tokenizer.json (the end-of-text token also pads)."""
    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=eos_token, pad_token=eos_token,
                                   bos_token=eos_token, model_input_names=MODEL_INPUTS)


def export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, *,
           summary: dict[str, Any], history: list[dict[str, Any]], lineage: dict[str, Any]) -> Path:
    """Write config.json, model.safetensors (or a PEFT adapter), tokenizer files, generation_config.json,
    model-card.md, lineage.json and loss-curve.png into `directory` (replaced whole)."""
    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    save_tokenizer(tokenizer, partial)
    eos = getattr(model.config, "eos_token_id", None)
    if eos is not None:
        GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False).save_pretrained(partial)
    (partial / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True))
    loss_curve_png(history, partial / "loss-curve.png")
    (partial / "model-card.md").write_text(model_card(summary, lineage))
    make_world_readable(partial)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save the tokenizer so that it returns only what a causal LM takes, whatever tokenizer it was wrapped from
    (a fine-tuned model inherits its base's tokenizer, which may predate MODEL_INPUTS)."""
    tokenizer.save_pretrained(directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if config.get("model_input_names") != MODEL_INPUTS:
        config["model_input_names"] = MODEL_INPUTS
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def make_world_readable(directory: Path) -> None:
    """Files 0644 and directories 0755, whatever the umask or the writer (safetensors writes 0600 temp files)."""
    directory.chmod(DIRECTORY_MODE)
    for root, directories, files in os.walk(directory):
        for name in directories:
            Path(root, name).chmod(DIRECTORY_MODE)
        for name in files:
            Path(root, name).chmod(FILE_MODE)


def loss_curve_png(history: list[dict[str, Any]], path: Path) -> None:
    """Training (and, where measured, validation) loss against step, as a PNG for the model card."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    from matplotlib import pyplot

    train = [(e["step"], e["loss"]) for e in history if e.get("loss") is not None]
    validation = [(e["step"], e["validationLoss"]) for e in history if e.get("validationLoss") is not None]
    figure, axes = pyplot.subplots(figsize=(6, 3.2), dpi=100)
    for points, label in ((train, "training"), (validation, "validation")):
        if points:
            axes.plot(*zip(*points, strict=True), label=label, marker="." if len(points) < 20 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.grid(alpha=0.3)
    if train or validation:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no loss was reported", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


def model_card(summary: dict[str, Any], lineage: dict[str, Any], *, trained: bool = True) -> str:
    """The card's run summary and lineage; `trained`: a training run (with a loss curve), not a transformation."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in summary.items())
    sources = "\n".join(f"- {key}: {value}" for key, value in sorted(lineage.items()))
    made = "Trained" if trained else "Transformed (no training)"
    curve = "![loss curve](loss-curve.png)\n\n" if trained else ""
    return (f"# Model card\n\n{made} by llmops-operator.\n\n## Run summary\n\n| item | value |\n|---|---|\n"
            f"{rows}\n\n{curve}## Lineage\n\n{sources}\n")
