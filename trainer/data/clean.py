"""The per-document part of the pipeline, as one pure function over a batch of columns.

Both engines run exactly this: the inline engine calls it in-process, the Ray engine hands it to
`Dataset.map_batches`. Global stages (de-duplication, split, tokenizer) run after it on the driver.
"""

from __future__ import annotations

import json
from typing import Any

from llmops.trainer.config.data import PipelineConfig

from .lsh import band_keys
from .stages import content_hash, filter_lines, length_rule, normalize, quality_rule, scrub_pii

Batch = dict[str, list[Any]]


def clean_batch(batch: Batch, config_json: str) -> Batch:
    """Columns id, text, source in; adds reason (drop rule or ""), lines_removed, pii (JSON), hash."""
    config = PipelineConfig.model_validate_json(config_json)
    out: Batch = {"id": [], "source": [], "text": [], "reason": [], "lines_removed": [], "pii": [], "hash": []}
    for doc_id, text, source in zip(batch["id"], batch["text"], batch["source"], strict=True):
        text, reason, removed, pii = clean_text(str(text), config)
        out["id"].append(doc_id)
        out["source"].append(source)
        out["text"].append(text)
        out["reason"].append(reason or "")
        out["lines_removed"].append(removed)
        out["pii"].append(json.dumps(pii, sort_keys=True))
        out["hash"].append(content_hash(text) if not reason else "")
    return out


def clean_and_sketch_batch(batch: Batch, config_json: str) -> Batch:
    """clean_batch plus `order` (passed through) and `bands`: each kept document's LSH band keys (empty
    when dropped or near-dedup is off). The streaming path runs this, so MinHash runs on the workers and the
    driver only shuffles keys."""
    out = clean_batch(batch, config_json)
    out["order"] = list(batch["order"])
    near = PipelineConfig.model_validate_json(config_json).dedup.near
    out["bands"] = [band_keys(text, near) if near.enabled and not reason else []
                    for text, reason in zip(out["text"], out["reason"], strict=True)]
    return out


def clean_text(text: str, config: PipelineConfig) -> tuple[str, str | None, int, dict[str, int]]:
    """(cleaned text, the rule that dropped it or None, lines removed, PII replacements by kind)."""
    text = normalize(text, config.normalize)
    text, removed = filter_lines(text, config.filters.lines)
    if not text:
        return "", "lines.empty", removed, {}
    reason = length_rule(text, config.filters.length) or quality_rule(text, config.filters.quality)
    if reason:
        return "", reason, removed, {}
    pii: dict[str, int] = {}
    if config.pii.enabled:
        text, counts = scrub_pii(text, config.pii.kinds)
        pii = dict(counts)
    return text, None, removed, pii
