"""`llmops-finetune` for methods quantize and prune: stage the base model (and calibration records) in, transform
it, write the new model directory with lineage and a model card naming the original, report on the result channel.

One process does the work; under torchrun the other ranks wait for it (there is nothing to parallelise)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llmops.trainer import storage
from llmops.trainer.config import layout
from llmops.trainer.config.finetune import FineTuneMethod, FineTuneRunConfig
from llmops.trainer.model_files import check_model_dir
from llmops.trainer.termination import report_trained


def directory_bytes(directory: Path) -> int:
    """Bytes of the weight files (*.safetensors) in a model directory: the size before and after."""
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def transform(config: FineTuneRunConfig) -> dict[str, Any]:
    """Quantize or prune `config.base_uri` into `<output>/model`; returns the summary the model card shows."""
    from llmops.trainer.train.distributed import barrier, init_distributed

    rank, _, _ = init_distributed()
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = _transform(config)
    barrier()
    return summary


def _transform(config: FineTuneRunConfig) -> dict[str, Any]:
    from llmops.trainer.train.export import make_world_readable, model_card

    storage.check_bucket(config.output_uri)
    started = time.monotonic()
    base = storage.stage_in(config.base_uri, "base model", require=layout.MODEL_CONFIG_FILE)
    check_model_dir(base, config.base_uri)
    model_uri = layout.model_uri(config.output_uri)
    lineage = {"base": config.base_uri, **config.lineage}
    with storage.output_dir(model_uri, last=layout.MODEL_CONFIG_FILE) as out:
        partial = out.with_name(f".{out.name}.partial")
        if config.method is FineTuneMethod.QUANTIZE:
            from .quantize import quantize

            summary = quantize(base, config.quantize, partial)
        elif config.method is FineTuneMethod.PRUNE:
            from llmops.trainer.train.finetune import calibration_texts

            from .prune import prune

            assert config.prune is not None and config.data_uri is not None
            data = storage.stage_in(config.data_uri, "data")
            texts = calibration_texts(config, data, config.prune.calibration_examples)
            summary = prune(base, config.prune, texts, partial)
            lineage["data"] = config.data_uri
        else:
            raise ValueError(f"method {config.method.value} is trained, not transformed")
        summary = {"method": config.method.value, **summary, "original": config.base_uri,
                   "seconds": round(time.monotonic() - started, 1)}
        (partial / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True))
        (partial / "model-card.md").write_text(model_card(summary, lineage, trained=False))
        make_world_readable(partial)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        partial.rename(out)
    report_trained(model_uri, [], summary, parameters=summary.get("parameters"))
    return summary
