"""Export a trained model in Hugging Face format, with tokenizer, model card, lineage and loss curve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast


def wrap_tokenizer(tokenizer_file: Path, eos_token: str) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a Dataset's tokenizer.json (the end-of-text token also pads)."""
    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=eos_token, pad_token=eos_token,
                                   bos_token=eos_token)


def export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, *,
           summary: dict[str, Any], history: list[dict[str, Any]], lineage: dict[str, Any]) -> Path:
    """Write config.json, model.safetensors (or a PEFT adapter), tokenizer files, generation_config.json,
    model-card.md, lineage.json and loss-curve.svg into `directory` (replaced whole)."""
    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    eos = getattr(model.config, "eos_token_id", None)
    if eos is not None:
        GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False).save_pretrained(partial)
    (partial / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True))
    losses = [(e["step"], e["loss"]) for e in history if e.get("loss") is not None]
    (partial / "loss-curve.svg").write_text(loss_curve_svg(losses))
    (partial / "model-card.md").write_text(model_card(summary, lineage))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def loss_curve_svg(points: list[tuple[int, float]], width: int = 480, height: int = 240) -> str:
    """A dependency-free line chart of training loss against step."""
    if len(points) < 2:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"/>\n'
    steps, losses = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(steps), max(steps), min(losses), max(losses)
    scale_x = (width - 60) / max(1, x1 - x0)
    scale_y = (height - 40) / max(1e-9, y1 - y0)
    path = " ".join(f"{40 + (s - x0) * scale_x:.1f},{height - 20 - (v - y0) * scale_y:.1f}" for s, v in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{path}"/>'
            f'<text x="40" y="14" font-size="12">training loss {y1:.3f} -> {losses[-1]:.3f} '
            f'(steps {x0}-{x1})</text></svg>\n')


def model_card(summary: dict[str, Any], lineage: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in summary.items())
    sources = "\n".join(f"- {key}: {value}" for key, value in sorted(lineage.items()))
    return ("# Model card\n\nTrained by llmops-operator.\n\n## Run summary\n\n| item | value |\n|---|---|\n"
            f"{rows}\n\n![loss curve](loss-curve.svg)\n\n## Lineage\n\n{sources}\n")
