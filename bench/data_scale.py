"""The scale mode of bench/data_pipeline.py (`--scale`): the streaming engine on corpora of three sizes.

See data_pipeline.py's docstring for what is measured. Layout: `write_corpus` generates a corpus on disk (never
held in memory), `run_pipeline` runs one `pipeline.run` in a fresh child process (this file, `child` command)
and reads back what the child measured, `ray_cluster` starts a local Ray cluster of one or two worker nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_pipeline import SHINGLE, THRESHOLD, ours_settings, passages, quality, run_datatrove
from machine import cpu_description, free_port
from pydantic import BaseModel

from llmops.trainer.data.dedup import jaccard

SIZES = (25_000, 100_000, 400_000)
QUICK_SIZES = (1_500, 3_000, 6_000)
RSS_BUDGET_MB = 200
"""What we allow the curation process: its peak RSS must stay under this, and the largest full-mode corpus
is larger than it on disk."""
DOCS_PER_FILE = 5_000
BLOCK_DOCUMENTS = 512
PARTITIONS = 16
VOCAB_SIZE = 1_024
SHARD_TOKENS = 1 << 22
NEAR_SHARE, EXACT_SHARE = 0.10, 0.05
"""Planted copies per original: near (one word replaced) and exact."""


# --- the synthetic corpus ---------------------------------------------------------------------------------

@dataclass
class Corpus:
    directory: Path
    documents: int
    bytes: int
    near: dict[str, str]
    """{near copy id: original id}, only pairs whose exact shingle Jaccard is >= THRESHOLD."""
    exact: set[str]


def write_corpus(directory: Path, documents: int, seed: int = 0) -> Corpus:
    """About `documents` JSONL records in files of DOCS_PER_FILE, written file by file.

    Each original is a Shakespeare passage with its words shuffled (seeded): the words and lengths of real
    text, but no two originals share more than a few 5-word shingles, so the only near duplicates are the
    planted ones. Each file holds its originals, then (shuffled) near and exact copies of originals of this
    file and the one before, so every copy comes after its original and some pairs span files.
    Record ids are `FILE:LINE`, which is also what our reader calls the document (after `bench/`).
    """
    rng = random.Random(seed)
    pool = passages()
    vocabulary = sorted({w for text in pool[:500] for w in text.split() if w.isalpha()})
    directory.mkdir(parents=True)
    originals_per_file = round(DOCS_PER_FILE / (1 + NEAR_SHARE + EXACT_SHARE))
    corpus = Corpus(directory, 0, 0, {}, set())
    previous: list[tuple[str, str]] = []
    near_copied: set[str] = set()  # originals of the previous and this file that have a near copy already
    number = 0
    while corpus.documents < documents:
        name = f"part-{number:05d}.jsonl"
        wanted = min(originals_per_file, round((documents - corpus.documents) / (1 + NEAR_SHARE + EXACT_SHARE)))
        records: list[tuple[str, str]] = []  # (id, text)
        for _ in range(max(1, wanted)):
            words = rng.choice(pool).split()
            rng.shuffle(words)
            records.append((f"{name}:{len(records) + 1}", " ".join(words)))
        current = records.copy()
        copies: list[tuple[str | None, str]] = []  # (original id for near copies, text)
        sources = previous + current
        # At most one near copy per original, and never the original word back: two copies of one
        # original, or an "edit" that changes nothing, would be exact duplicates of each other.
        unused = [record for record in sources if record[0] not in near_copied]
        for original_id, text in rng.sample(unused, round(len(current) * NEAR_SHARE)):
            words = text.split()
            position, replaced = rng.randrange(len(words)), ""
            while not replaced or replaced == words[position]:
                replaced = rng.choice(vocabulary)
            words[position] = replaced
            edited = " ".join(words)
            near_copied.add(original_id)
            if jaccard(text, edited, SHINGLE) >= THRESHOLD:
                copies.append((original_id, edited))
        copies += [(None, text) for _, text in rng.sample(sources, round(len(current) * EXACT_SHARE))]
        rng.shuffle(copies)
        for original_id, text in copies:
            copy_id = f"{name}:{len(records) + 1}"
            records.append((copy_id, text))
            if original_id is None:
                corpus.exact.add(copy_id)
            else:
                corpus.near[copy_id] = original_id
        data = "".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in records).encode()
        (directory / name).write_bytes(data)
        corpus.documents += len(records)
        corpus.bytes += len(data)
        previous, number = current, number + 1
        near_copied &= {doc_id for doc_id, _ in current}
    return corpus


# --- one pipeline run, in a child process ------------------------------------------------------------------

class ChildRequest(BaseModel):
    input_dir: str
    output_dir: str
    engine: Literal["inline", "ray"]


class ChildResult(BaseModel):
    read: int
    kept: int
    dropped: dict[str, int]
    near_duplicates: list[str]
    """Our document ids (`bench/FILE:LINE`) dropped as near duplicates."""
    curate_s: float
    build_s: float
    """Tokenizer training, shards and documents.jsonl."""
    cpu_s: float
    rss_after_imports_mb: float
    rss_curate_peak_mb: float
    rss_build_peak_mb: float
    cluster_cpus: float | None = None


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Sets VmHWM back to the current RSS (Linux >= 4.0), so each phase's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def child(request: ChildRequest) -> ChildResult:
    """`pipeline.run` with streaming on, split in its two halves to time and peak-measure each."""
    from llmops.trainer.config.data import DataJobConfig
    from llmops.trainer.data import pipeline
    from llmops.trainer.data.engines import Engine, InlineEngine, RayEngine
    from llmops.trainer.data.progress import Progress
    from llmops.trainer.data.streaming import curate_streaming

    config = DataJobConfig.model_validate({
        **ours_settings(Path(request.input_dir)),
        "tokenizer": {"train": {"vocabSize": VOCAB_SIZE}},
        "shardSizeTokens": SHARD_TOKENS,
        "outputUri": request.output_dir,
        "streaming": {"enabled": True, "blockDocuments": BLOCK_DOCUMENTS, "partitions": PARTITIONS},
    })
    engine: Engine = InlineEngine() if request.engine == "inline" else RayEngine()
    rss_imports = _status_mb("VmRSS")
    _reset_peak_rss()
    started, cpu_started = time.perf_counter(), time.process_time()
    # pipeline.run is exactly these two calls (plus removing the spill); split to see which half costs what.
    with tempfile.TemporaryDirectory(prefix="llmops-data-spill-") as spill:
        curated = curate_streaming(config, engine, Path(spill), config.streaming)
        curated_at, rss_curate = time.perf_counter(), _status_mb("VmHWM")
        _reset_peak_rss()
        manifest = pipeline.build(config, curated, Progress(enabled=False), time.monotonic())
    finished, rss_build = time.perf_counter(), _status_mb("VmHWM")
    cpus = None
    if request.engine == "ray":
        import ray

        cpus = ray.cluster_resources().get("CPU")
    return ChildResult(read=manifest.counts.read, kept=manifest.counts.kept, dropped=manifest.counts.dropped,
                       near_duplicates=curated.near_duplicates, curate_s=curated_at - started,
                       build_s=finished - curated_at, cpu_s=time.process_time() - cpu_started,
                       rss_after_imports_mb=rss_imports, rss_curate_peak_mb=rss_curate, rss_build_peak_mb=rss_build,
                       cluster_cpus=cpus)


@dataclass
class Run:
    result: ChildResult
    seconds: float
    kept_digest: str
    """sha256 of the kept document ids in output order: equal digests, equal kept sets (and order)."""

    @property
    def rss_peak_mb(self) -> float:
        return max(self.result.rss_curate_peak_mb, self.result.rss_build_peak_mb)

    def outcome(self) -> tuple[str, list[str]]:
        """What two runs of the same corpus must agree on: the kept ids in order, the near-duplicate ids."""
        return self.kept_digest, self.result.near_duplicates

    def dropped_ids(self) -> set[str]:
        """Near-duplicate drops as corpus record ids (`bench/FILE:LINE` -> `FILE:LINE`)."""
        return {doc_id.removeprefix("bench/") for doc_id in self.result.near_duplicates}


def run_pipeline(corpus: Corpus, work: Path, engine: Literal["inline", "ray"],
                 env: dict[str, str] | None = None) -> Run:
    output, result_file = work / f"out-{engine}", work / f"result-{engine}.json"
    request = ChildRequest(input_dir=str(corpus.directory), output_dir=str(output), engine=engine)
    child_env = {**os.environ, **(env or {}),
                 # One core: the tokenizer's Rust thread pool would otherwise use every core.
                 "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, __file__, "child", request.model_dump_json(), str(result_file)],
                   check=True, cwd=work, env=child_env)
    result = ChildResult.model_validate_json(result_file.read_text())
    digest = hashlib.sha256()
    with (output / "documents.jsonl").open() as documents:
        for line in documents:
            digest.update(json.loads(line)["id"].encode() + b"\n")
    shutil.rmtree(output)
    return Run(result, result.curate_s + result.build_s, digest.hexdigest())


# --- a local Ray cluster -----------------------------------------------------------------------------------

class RayCluster:
    """`ray start --block` processes on this machine, one CPU per node, each in its own temp dir and process
    group: stopping terminates exactly those (not `ray stop`, which kills every Ray on the machine).

    Token authentication with a token of this run only: Ray turns it on by itself when ~/.ray/auth_token
    exists (any earlier local `ray.init` writes one), and a driver must then present the cluster's token.
    """

    def __init__(self, work: Path):
        self.work, self.port = work, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        """What a driver needs to use this cluster."""
        self.nodes: list[subprocess.Popen[bytes]] = []
        self._files = contextlib.ExitStack()  # node logs and temp dirs, closed and removed on stop

    def add_node(self) -> None:
        number = len(self.nodes)
        # Short (Unix socket paths live under it), and removed with everything in it on stop.
        temp_dir = Path(self._files.enter_context(tempfile.TemporaryDirectory(prefix=f"ray{number}-", dir="/tmp")))
        ray = str(Path(sys.executable).with_name("ray"))
        role = (["--head", "--port", str(self.port), "--include-dashboard=false"] if number == 0
                else ["--address", self.address])
        log = self._files.enter_context((self.work / f"ray-node-{number}.log").open("wb"))
        self.nodes.append(subprocess.Popen(
            [ray, "start", "--block", *role, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
             "--object-store-memory", str(200 * 2**20), "--temp-dir", str(temp_dir), "--disable-usage-stats"],
            cwd=self.work, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        # `ray start` writes this file once the node is up and registered.
        ready = temp_dir / "ray_current_cluster"
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.nodes[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {number} did not start; see {self.work}/ray-node-{number}.log:\n"
                                   + (self.work / f"ray-node-{number}.log").read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                node.terminate()  # `ray start --block` shuts its node down on SIGTERM
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # anything of that node's group still alive
            node.wait()
        self._files.close()


@contextlib.contextmanager
def ray_cluster(work: Path) -> Iterator[RayCluster]:
    cluster = RayCluster(work)
    try:
        cluster.add_node()
        yield cluster
    finally:
        cluster.stop()


# --- the benchmark -----------------------------------------------------------------------------------------

def scale(quick: bool) -> None:
    if importlib.util.find_spec("datatrove") is None:
        sys.exit(f"data_pipeline --scale: datatrove (the baseline) is not installed for {sys.executable}. "
                 "Run `make bench-setup`, then `.venv-bench/bin/python bench/data_pipeline.py --scale`.")
    began = time.monotonic()
    sizes = QUICK_SIZES if quick else SIZES
    ray_size = sizes[0] if quick else sizes[1]
    print(f"cpu: {cpu_description()}")
    print(f"scale mode: {'/'.join(map(str, sizes))} documents, streaming (blocks of {BLOCK_DOCUMENTS}, "
          f"{PARTITIONS} partitions), tokenizer vocabulary {VOCAB_SIZE}, RSS budget {RSS_BUDGET_MB} MB", flush=True)
    sized: list[Sized] = []
    datatrove_rate, ray_runs = 0.0, []
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="bench-data-scale-"))
        try:
            corpus = write_corpus(work / "input", size)
            ours = run_pipeline(corpus, work, "inline")
            sized.append(Sized(corpus, ours, *quality(ours.dropped_ids(), corpus.near, corpus.exact)))
            print(sized[-1].describe(), flush=True)
            if size == sizes[0]:
                # datatrove logs every stage to stderr; the same logs go to its logging_dir.
                with (work / "datatrove.log").open("w") as log, contextlib.redirect_stderr(log):
                    seconds, dropped = run_datatrove(corpus.directory, work / "datatrove")
                datatrove_rate = corpus.documents / seconds
                theirs_recall, theirs_precision = quality(dropped, corpus.near, corpus.exact)
                print(f"datatrove, {corpus.documents} docs: {seconds:.1f} s, {datatrove_rate:.0f} docs/s/core, "
                      f"recall {theirs_recall:.3f} precision {theirs_precision:.3f}", flush=True)
            if size == ray_size:
                ray_runs = ray_scaling(corpus, work, ours)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    one, two = ray_runs
    print(f"ray 2 vs 1 worker nodes: x{one.seconds / two.seconds:.2f} end to end, "
          f"x{one.result.curate_s / two.result.curate_s:.2f} curation (what the workers run; the spill, "
          "de-duplication, tokenizer and shards run on the driver)")
    rss = [s.run.rss_peak_mb for s in sized]
    largest = sized[-1].corpus.bytes / 2**20
    if max(rss) > RSS_BUDGET_MB:
        print(f"OVER BUDGET: peak RSS {max(rss):.0f} MB > {RSS_BUDGET_MB} MB")
    if not quick and largest <= RSS_BUDGET_MB:
        print(f"NOTE: the largest corpus ({largest:.0f} MB) is not larger than the RSS budget")
    print(f"wall time {time.monotonic() - began:.0f} s")
    print(f"data_pipeline: ratio={min(s.rate for s in sized) / datatrove_rate:.2f} "
          f"rss_mb={'/'.join(f'{m:.0f}' for m in rss)} docs_per_s_core={'/'.join(f'{s.rate:.0f}' for s in sized)} "
          f"recall={min(s.recall for s in sized):.3f} precision={min(s.precision for s in sized):.3f} "
          f"ray_2_vs_1={one.seconds / two.seconds:.2f} largest_corpus_mb={largest:.0f} "
          f"rss_budget_mb={RSS_BUDGET_MB} datatrove_docs_per_s_core={datatrove_rate:.0f} "
          f"curate_ratio={min(s.curate_rate for s in sized) / datatrove_rate:.2f} "
          f"ray_curate_2_vs_1={one.result.curate_s / two.result.curate_s:.2f}")


@dataclass
class Sized:
    """Our run at one corpus size, with its near-duplicate quality against the planted pairs."""

    corpus: Corpus
    run: Run
    recall: float
    precision: float

    @property
    def rate(self) -> float:
        """docs/s/core of the whole pipeline.run (one core: inline engine, tokenizer single-threaded)."""
        return self.corpus.documents / self.run.seconds

    @property
    def curate_rate(self) -> float:
        """docs/s/core of curation alone: read, clean, sketch, spill, exact and near dedup (what datatrove runs)."""
        return self.corpus.documents / self.run.result.curate_s

    def describe(self) -> str:
        r = self.run.result
        return (f"{self.corpus.documents:7d} docs ({len(self.corpus.near)} near, {len(self.corpus.exact)} exact "
                f"copies), {self.corpus.bytes / 2**20:5.1f} MB: {self.run.seconds:6.1f} s = curate {r.curate_s:.1f} "
                f"+ tokenizer/shards {r.build_s:.1f} ({r.cpu_s / self.run.seconds:.2f} cores), {self.rate:4.0f} "
                f"docs/s/core (curate {self.curate_rate:.0f}), peak RSS {self.run.rss_peak_mb:4.0f} MB (after "
                f"imports {r.rss_after_imports_mb:.0f}, curate {r.rss_curate_peak_mb:.0f}, build "
                f"{r.rss_build_peak_mb:.0f}), recall {self.recall:.3f} precision {self.precision:.3f}, dropped "
                f"{r.dropped.get('dedup.near', 0)} near and {r.dropped.get('dedup.exact', 0)} exact duplicates")


def ray_scaling(corpus: Corpus, work: Path, inline: Run) -> list[Run]:
    """The streaming pipeline on RayEngine with one, then two one-CPU worker nodes. Both must keep exactly
    what the inline run kept."""
    runs = []
    with ray_cluster(work) as cluster:
        for nodes in (1, 2):
            if nodes == 2:
                cluster.add_node()
            run = run_pipeline(corpus, work, "ray", cluster.env)
            assert run.result.cluster_cpus == nodes, f"cluster has {run.result.cluster_cpus} CPUs, wanted {nodes}"
            assert run.outcome() == inline.outcome(), f"Ray on {nodes} nodes kept other documents than inline"
            runs.append(run)
            print(f"ray, {nodes} worker node{'s' * (nodes > 1)}: {run.seconds:.1f} s = curate "
                  f"{run.result.curate_s:.1f} + tokenizer/shards {run.result.build_s:.1f}, "
                  f"{corpus.documents / run.seconds:.0f} docs/s (curate {corpus.documents / run.result.curate_s:.0f}), "
                  "same kept documents as inline", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description="the scale mode's child process (internal)")
    parser.add_argument("command", choices=["child"])
    parser.add_argument("request")
    parser.add_argument("result")
    args = parser.parse_args()
    result = child(ChildRequest.model_validate_json(args.request))
    Path(args.result).write_text(result.model_dump_json())


if __name__ == "__main__":
    main()
