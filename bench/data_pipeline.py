"""Data pipeline throughput and near-duplicate quality: ours versus datatrove, same corpus, same run.

Corpus: passages of 50+ words from the built-in Shakespeare plays (modern editions), plus planted copies:
10% near-duplicates (one word replaced; exact Jaccard >= 0.8 kept as ground truth) and 5% exact copies,
shuffled in. Both pipelines run the same steps on one core: read JSONL -> Gopher quality -> PII ->
MinHash near-dedup (5-word shingles, same bands x rows) -> write JSONL. Ours also normalises Unicode,
runs repetition rules and exact hashing, and scrubs more PII kinds.

Prints docs/s per core for each, and near-duplicate recall/precision against the planted pairs.
Last line: `data_pipeline: ratio=X.XX` (our docs/s / datatrove's docs/s).

Needs the bench extra in its own venv (datatrove wants a newer huggingface-hub than transformers allows):
`make bench-setup`, then `.venv-bench/bin/python bench/data_pipeline.py [--quick]`. Nothing is downloaded at
run time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from llmops.trainer.config.data import NearDedupConfig, PipelineConfig, Source
from llmops.trainer.data.dedup import jaccard, lsh_parameters
from llmops.trainer.data.engines import InlineEngine
from llmops.trainer.data.pipeline import curate
from llmops.trainer.data.sources import SourceReport, read_source

THRESHOLD = 0.8
SHINGLE = 5


def build_corpus(limit: int | None, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, str], set[str]]:
    """Documents, {near-copy id: original id} for pairs with exact Jaccard >= THRESHOLD, exact-copy ids."""
    report = SourceReport()
    source = Source(name="plays", uri="builtin://shakespeare", include=["*_gut.txt"])
    seen, base = set(), []
    for doc in read_source(source, report):
        text = " ".join(doc.text.split())
        if len(text.split()) >= 50 and text not in seen:
            seen.add(text)
            base.append({"id": f"doc-{len(base)}", "text": text})
    base = base[:limit] if limit else base
    rng = random.Random(seed)
    vocabulary = sorted({w for d in base[:500] for w in d["text"].split() if w.isalpha()})
    near, exact, copies = {}, set(), []
    for original in rng.sample(base, len(base) // 10):
        words = original["text"].split()
        words[rng.randrange(len(words))] = rng.choice(vocabulary)
        text = " ".join(words)
        if jaccard(original["text"], text, SHINGLE) >= THRESHOLD:
            copy_id = f"near-{len(near)}"
            near[copy_id] = original["id"]
            copies.append({"id": copy_id, "text": text})
    for original in rng.sample(base, len(base) // 20):
        copy_id = f"exact-{len(exact)}"
        exact.add(copy_id)
        copies.append({"id": copy_id, "text": original["text"]})
    # Copies come after their originals (both pipelines keep the first of a cluster in read order).
    rng.shuffle(copies)
    return base + copies, near, exact


def write_jsonl(path: Path, docs: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def run_ours(input_dir: Path, output: Path) -> tuple[float, set[str]]:
    bands, rows = lsh_parameters(NearDedupConfig(threshold=THRESHOLD))
    config = PipelineConfig.model_validate({
        "sources": [{"name": "bench", "uri": str(input_dir)}],
        "filters": {"quality": {"minWords": 20, "maxDuplicateLineFraction": 1.0, "maxTopNgramFraction": 1.0,
                                "minAlphabeticWordFraction": 0.0}},
        "dedup": {"near": {"threshold": THRESHOLD, "shingleSize": SHINGLE, "numPermutations": bands * rows,
                           "bands": bands}},
    })
    started = time.perf_counter()
    curated = curate(config, InlineEngine())
    with output.open("w") as out:
        for row in curated.kept:
            out.write(json.dumps({"id": row["id"], "text": row["text"]}) + "\n")
    seconds = time.perf_counter() - started
    # Map our document ids ("bench/docs.jsonl:LINE") back to the corpus ids.
    ids = [json.loads(line)["id"] for line in (input_dir / "docs.jsonl").read_text().splitlines()]
    dropped = {ids[int(doc_id.rsplit(":", 1)[1]) - 1] for doc_id in curated.near_duplicates}
    return seconds, dropped


def run_datatrove(input_dir: Path, work: Path) -> tuple[float, set[str]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    bands, rows = lsh_parameters(NearDedupConfig(threshold=THRESHOLD))
    config = MinhashConfig(n_grams=SHINGLE, num_buckets=bands, hashes_per_bucket=rows)

    def gopher() -> GopherQualityFilter:
        return GopherQualityFilter(min_doc_words=20, min_stop_words=None, max_non_alpha_words_ratio=None)

    stages = [
        [JsonlReader(str(input_dir)), gopher(), PIIFormatter(), JsonlWriter(str(work / "filtered")),
         MinhashDedupSignature(output_folder=str(work / "signatures"), config=config)],
        [MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                             config=config)],
        [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config)],
        [JsonlReader(str(work / "filtered")),
         MinhashDedupFilter(input_folder=str(work / "remove"),
                            exclusion_writer=JsonlWriter(str(work / "removed"))),
         JsonlWriter(str(work / "out"))],
    ]
    started = time.perf_counter()
    for index, pipeline in enumerate(stages):
        # The bucket stage runs one task per band (datatrove's requirement), all on the one worker.
        tasks = bands if index == 1 else 1
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=str(work / f"logs-{index}")).run()
    seconds = time.perf_counter() - started
    dropped = set()
    for path in (work / "removed").glob("*.jsonl*"):
        import gzip

        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as lines:
            dropped |= {json.loads(line)["id"] for line in lines}
    return seconds, dropped


def quality(dropped: set[str], near: dict[str, str], exact: set[str]) -> tuple[float, float]:
    """Recall over planted near pairs (either member dropped counts), precision of the near-dup drops."""
    found = sum(1 for copy, original in near.items() if copy in dropped or original in dropped)
    planted = set(near) | set(near.values()) | exact
    return found / max(1, len(near)), len(dropped & planted) / max(1, len(dropped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1500 base documents (about a minute)")
    args = parser.parse_args()
    docs, near, exact = build_corpus(1500 if args.quick else None)
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        write_jsonl(work / "input" / "docs.jsonl", docs)
        ours_s, ours_dropped = run_ours(work / "input", work / "ours.jsonl")
        theirs_s, theirs_dropped = run_datatrove(work / "input", work / "datatrove")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_rate, theirs_rate = len(docs) / ours_s, len(docs) / theirs_s
    ours_recall, ours_precision = quality(ours_dropped, near, exact)
    theirs_recall, theirs_precision = quality(theirs_dropped, near, exact)
    print(f"documents: {len(docs)} ({len(near)} planted near-duplicates, {len(exact)} exact copies)")
    print(f"ours:      {ours_rate:8.0f} docs/s/core  near-dup recall {ours_recall:.3f} precision {ours_precision:.3f}")
    print(f"datatrove: {theirs_rate:8.0f} docs/s/core  near-dup recall {theirs_recall:.3f} "
          f"precision {theirs_precision:.3f}")
    print(f"data_pipeline: ratio={ours_rate / theirs_rate:.2f} ours_docs_per_s={ours_rate:.0f} "
          f"datatrove_docs_per_s={theirs_rate:.0f} recall={ours_recall:.3f} precision={ours_precision:.3f}")


if __name__ == "__main__":
    main()
