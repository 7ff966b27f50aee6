"""Distributed near-dedup (band keys -> partitions -> candidate pairs -> exact check -> resolution in read order)
gives the sequential NearDuplicateIndex's verdicts, and the streaming curation drops exactly what the
in-memory one drops."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmops.trainer.config.data import NearDedupConfig, PipelineConfig, StreamingConfig
from llmops.trainer.data import lsh
from llmops.trainer.data.dedup import NearDuplicateIndex, jaccard
from llmops.trainer.data.engines import InlineEngine
from llmops.trainer.data.pipeline import curate, curate_streaming

VOCABULARY = [f"word{i}" for i in range(500)]


def passage(rng: random.Random, words: int = 120) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def edited(text: str, positions: list[int], rng: random.Random) -> str:
    """`text` with the words at `positions` replaced: each edit removes up to 5 of its 5-word shingles."""
    words = text.split()
    for position in positions:
        words[position] = "new" + rng.choice(VOCABULARY)
    return " ".join(words)


def chain(rng: random.Random) -> list[str]:
    """A ~ B and B ~ C at threshold 0.8, but A !~ C: the sequential rule keeps A, drops B, keeps C."""
    a = passage(rng)
    b = edited(a, [20, 50], rng)
    c = edited(b, [80, 105], rng)
    assert jaccard(a, b, 5) >= 0.8 and jaccard(b, c, 5) >= 0.8 and jaccard(a, c, 5) < 0.8
    return [a, b, c]


def corpus(seed: int = 0, originals: int = 150) -> list[str]:
    """Distinct passages, then near copies (one or two edits), exact copies and A~B~C chains, shuffled in
    after the originals they copy."""
    rng = random.Random(seed)
    base = [passage(rng) for _ in range(originals)]
    copies = [edited(rng.choice(base), rng.sample(range(120), rng.choice([1, 2])), rng) for _ in range(30)]
    copies += [rng.choice(base) for _ in range(10)]
    rng.shuffle(copies)
    chains = [text for _ in range(3) for text in chain(rng)]
    return base + copies + chains


def sequential_verdicts(texts: list[str], config: NearDedupConfig) -> list[int]:
    index = NearDuplicateIndex(config)
    return [order for order, text in enumerate(texts) if index.is_duplicate(str(order), text)]


@pytest.mark.parametrize("partitions", [1, 7])
def test_distributed_lsh_drops_exactly_what_the_sequential_index_drops(partitions: int) -> None:
    texts = corpus()
    config = NearDedupConfig(threshold=0.8)
    want = sequential_verdicts(texts, config)
    got = lsh.near_duplicates(dict(enumerate(texts)), config, partitions=partitions)
    assert got == want
    # The corpus exercises what it should: every exact copy and most near copies are found (LSH may miss a
    # few borderline pairs, identically in both), and the middle of each chain goes while its end stays.
    assert 40 <= len(want) <= 43
    chain_start = len(texts) - 9
    assert [o - chain_start for o in want if o >= chain_start] == [1, 4, 7]


def test_the_middle_of_a_chain_is_dropped_and_its_end_kept() -> None:
    a, b, c = chain(random.Random(1))
    assert lsh.near_duplicates({0: a, 1: b, 2: c}, NearDedupConfig()) == [1]
    # Resolution alone: C's only similar earlier document is B, which was dropped, so C is kept.
    assert lsh.resolve([(0, 1), (1, 2)]) == [1]
    assert lsh.resolve([(0, 1), (1, 2), (0, 2)]) == [1, 2]
    assert lsh.resolve([(3, 5), (5, 9), (9, 12)]) == [5, 12]


def test_candidate_pairs_are_the_documents_sharing_a_band_key() -> None:
    records = np.array([(7, 3), (9, 1), (7, 0), (7, 5), (2, 4)], dtype=lsh.BAND_RECORD)
    assert sorted(lsh.candidate_pairs(records)) == [(0, 3), (0, 5), (3, 5)]
    assert list(lsh.candidate_pairs(records[:2])) == []


def test_band_keys_agree_on_a_band_iff_the_signatures_do() -> None:
    rng = random.Random(2)
    text = passage(rng)
    config = NearDedupConfig()
    same, near, other = (lsh.band_keys(t, config) for t in (text, edited(text, [60], rng), passage(rng)))
    assert same == lsh.band_keys(text, config)
    assert 0 < sum(x == y for x, y in zip(same, near, strict=True)) < len(same)
    assert not set(same) & set(other)


def test_streaming_curation_keeps_and_drops_what_the_in_memory_one_does(tmp_path: Path) -> None:
    texts = corpus(seed=3)
    source = tmp_path / "corpus"
    source.mkdir()
    # Two files, so read order runs across files and the blocks straddle them.
    half = len(texts) // 2
    for name, part in (("a.jsonl", texts[:half]), ("b.jsonl", texts[half:])):
        (source / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    config = PipelineConfig.model_validate({"sources": [{"name": "c", "uri": str(source)}],
                                            "filters": {"quality": {"minWords": 10}},
                                            "split": {"validationFraction": 0.2}})
    in_memory = curate(config, InlineEngine())
    spill = tmp_path / "spill"
    spill.mkdir()
    streamed = curate_streaming(config, InlineEngine(), spill, StreamingConfig(block_documents=16, partitions=5))
    assert streamed.counts == in_memory.counts
    assert streamed.counts.dropped["dedup.exact"] >= 10 and streamed.counts.dropped["dedup.near"] >= 30
    assert streamed.near_duplicates == in_memory.near_duplicates
    fields = ("id", "source", "text", "hash", "split")
    assert [[r[f] for f in fields] for r in streamed.rows()] == [[r[f] for f in fields] for r in in_memory.kept]
    assert [r["id"] for r in streamed.rows("validation")] == [r["id"] for r in in_memory.rows("validation")]
