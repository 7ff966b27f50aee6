"""Serving throughput: our server (continuous batching over a KV cache, prefix cache) against two baselines on
the same model in the same run: transformers' `generate` with static batching behind a minimal aiohttp server
("static"), and transformers' own continuous batching (`init_continuous_batching`, what `transformers serve
--continuous_batching` runs: paged attention, FIFO scheduler) behind the same streaming API ("continuous").

Model: a randomly initialised Llama (hidden 256, 4 layers, 8 heads, 4 KV heads, vocab 2048; BPE trained on
the standard library's pydoc topics), fp32 on CPU, every server in its own process with the same torch threads,
measured in turn while the others are suspended (SIGSTOP).
Greedy, end-of-sequence ignored, so every request generates exactly the tokens it asks for.

1. Closed loop, equal lengths (today's figures): 1, 4 and 16 clients, each sending its next request when the
   last is answered; prompt PROMPT_TOKENS, output OUTPUT_TOKENS tokens; at 16 also mixed output lengths
   (MIXED_OUTPUT_TOKENS). Streaming servers' TTFT is the first token's arrival; the static batch answers all at
   once, so its TTFT is the whole answer.
2. The anchors' workload (as vLLM's benchmark_serving): WORKLOAD_SEED fixes lognormal user-prompt and output
   lengths (clipped so a request fits the 256-token context), a shared SYSTEM_TOKENS-token system prompt opens
   SYSTEM_SHARE of the prompts, and requests arrive open-loop as a Poisson process at each of RATES. Per rate and
   server: output tokens/s, TTFT p50/p99, TPOT p99 (time after the first token over the tokens after it; 0 for
   the static baseline) and goodput: requests/s meeting both TTFT <= TTFT_BOUND_S and TPOT <= TPOT_BOUND_S.

Last line: `serve_throughput: ratio=X.XX` = our goodput / the static baseline's at the highest rate (a goodput of
0 counts as one request over the run, so a ratio stays finite and is a lower bound), then `vs_continuous=` (the
same against transformers' continuous batching), the TTFT p99s, and the one-client and 16-client equal-length
tokens/s ratios against static `generate`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_description, free_port

PROMPT_TOKENS = 32
OUTPUT_TOKENS = 64
MIXED_OUTPUT_TOKENS = (8, 16, 32, 64, 128)
"""Output lengths of the extra `mixed` measurement (not part of the ratio): what chat traffic looks like."""
SYSTEM_TOKENS = 64
SYSTEM_SHARE = 0.8
"""Share of the workload's requests whose prompt opens with the shared system prompt."""
WORKLOAD_SEED = 16
USER_TOKENS = (40.0, 0.8, 4, 120)
"""The user part of a prompt: lognormal median, sigma, clipped to [min, max] tokens."""
OUTPUT_LENGTHS = (32.0, 0.8, 4, 64)
"""Output tokens: lognormal median, sigma, clipped (system + user + output <= 248 of the 256-token context)."""
TTFT_BOUND_S = 1.0
TPOT_BOUND_S = 0.05
"""Goodput counts a request that got its first token within TTFT_BOUND_S and then one every TPOT_BOUND_S."""
RATES = (4.0, 8.0, 12.0, 16.0)
"""Request rates of the full run: around this 2-core machine's capacity for our server (alone it keeps every
request within the goodput bounds up to 16 req/s and saturates near 800 output tokens/s, about 24 req/s), so the
highest rate, where the ratio is taken, is one a server can sustain (past every server's capacity all three queue
without bound and goodput is noise)."""
BASELINE_MAX_BATCH = 16
CB_BLOCK_TOKENS = 32
CB_MAX_BATCH_TOKENS = 4096
"""transformers' continuous batching: its paged cache's block size (its default) and tokens per step."""
BASELINE_WINDOW_S = 0.01
NAME = "bench"


def prepare(directory: Path) -> None:
    """Write the model directory both servers load."""
    import pydoc_data.topics

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from llmops.trainer.config.model import ModelConfig
    from llmops.trainer.train.model import hf_config

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(list(pydoc_data.topics.topics.values()), trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    shape = ModelConfig(hidden_size=256, num_layers=4, num_heads=8, kv_heads=4, context_length=256)
    model = LlamaForCausalLM(hf_config(shape, len(tokenizer), tokenizer.eos_token_id))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# --- The baseline server ----------------------------------------------------------------------------------

def baseline_server(model_dir: Path, port: int) -> None:
    """transformers' generate with static batching: gather up to BASELINE_MAX_BATCH requests (or whatever
    arrived within BASELINE_WINDOW_S of the first), left-pad, generate, answer them all."""
    import torch
    from aiohttp import web
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pending: asyncio.Queue[tuple[dict, asyncio.Future]] = asyncio.Queue()

    def generate(batch: list[dict]) -> list[list[int]]:
        width = max(len(b["prompt"]) for b in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, body in enumerate(batch):
            ids[row, width - len(body["prompt"]):] = torch.tensor(body["prompt"])
            mask[row, width - len(body["prompt"]):] = 1
        new = max(b["max_tokens"] for b in batch)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        # A static batch runs until its longest request is done; each answer keeps only its own tokens.
        return [row[width : width + body["max_tokens"]] for row, body in zip(out.tolist(), batch, strict=True)]

    async def batcher() -> None:
        while True:
            batch = [await pending.get()]
            deadline = time.monotonic() + BASELINE_WINDOW_S
            while len(batch) < BASELINE_MAX_BATCH and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(pending.get(), left))
                except TimeoutError:
                    break
            outputs = await asyncio.to_thread(generate, [body for body, _ in batch])
            for (_, future), tokens in zip(batch, outputs, strict=True):
                future.set_result(tokens)

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        future = asyncio.get_running_loop().create_future()
        await pending.put((body, future))
        tokens = await future
        choice = {"index": 0, "text": tokenizer.decode(tokens), "finish_reason": "length"}
        return web.json_response({"choices": [choice], "usage": {"completion_tokens": len(tokens)}})

    async def main() -> None:
        task = asyncio.create_task(batcher())
        await serve_completions(port, completions)
        task.cancel()

    asyncio.run(main())


def continuous_server(model_dir: Path, port: int) -> None:
    """transformers' own continuous batching: the manager `transformers serve --continuous_batching` runs (paged
    sdpa attention, FIFO scheduler, greedy), behind the same streaming completions API as ours. Its results come
    on one queue; a thread routes each to its request (transformers serve re-queues other requests' results
    instead, which only adds to its cost). On CPU its sizing query (CUDA memory) returns nothing, so the cache is
    sized explicitly: the same 16 x 256 token positions as ours, and our prefill budget of tokens per step."""
    import itertools
    import threading

    from aiohttp import web
    from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessorList
    from transformers.generation.continuous_batching import RequestStatus
    from transformers.generation.continuous_batching import cache as paged_cache

    paged_cache.PagedAttentionMemoryHandler.get_available_memory = staticmethod(lambda *_: 4 << 30)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa_paged").eval()
    config = GenerationConfig(max_new_tokens=OUTPUT_TOKENS, do_sample=False, eos_token_id=-1, pad_token_id=0,
                              use_cache=False, scheduler="fifo", block_size=CB_BLOCK_TOKENS,
                              num_blocks=16 * 256 // CB_BLOCK_TOKENS, max_batch_tokens=CB_MAX_BATCH_TOKENS)
    manager = model.init_continuous_batching(generation_config=config, streaming=True)
    manager.logit_processor = LogitsProcessorList()  # as transformers serve does: greedy needs none
    manager.start()
    queues: dict[str, asyncio.Queue] = {}
    numbers = itertools.count()
    loop: asyncio.AbstractEventLoop | None = None

    def route() -> None:
        while True:
            result = manager.get_result(timeout=0.1)
            if result is not None and result.request_id in queues:
                loop.call_soon_threadsafe(queues[result.request_id].put_nowait, result)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        request_id = f"r{next(numbers)}"
        results = queues[request_id] = asyncio.Queue()
        manager.add_request(body["prompt"], request_id=request_id, max_new_tokens=body["max_tokens"])
        sent: list[int] = []
        response = None
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
        while True:
            result = await results.get()
            new = result.generated_tokens[len(sent):]
            sent += new
            if response is not None and new:
                await response.write(b"data: " + json.dumps({"choices": [{"token_ids": new}]}).encode() + b"\n\n")
            if result.status == RequestStatus.FINISHED:
                break
        del queues[request_id]
        if response is None:
            return web.json_response({"choices": [{"index": 0, "token_ids": sent, "finish_reason": "length"}],
                                      "usage": {"completion_tokens": len(sent)}})
        await response.write(b"data: [DONE]\n\n")
        return response

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        threading.Thread(target=route, daemon=True).start()
        await serve_completions(port, completions)

    asyncio.run(main())


async def serve_completions(port: int, completions) -> None:
    """A baseline's HTTP server: its completions handler and a readiness probe, until the process ends."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/readyz", lambda _: web.json_response({}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- Load generation --------------------------------------------------------------------------------------

async def one_request(session, url: str, prompt: list[int], stream: bool,
                      max_tokens: int = OUTPUT_TOKENS, rejected: list[str] | None = None) -> tuple[float, float, int]:
    """(time to first token, total time, output tokens); with `rejected`, a 429 is appended there and counts as
    a request that never got a token."""
    import aiohttp

    body = {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": stream, "return_token_ids": True}
    start = time.perf_counter()
    first, tokens = 0.0, 0
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=600)) as response:
        if response.status == 429 and rejected is not None:
            rejected.append(await response.text())
            return math.inf, math.inf, 0
        assert response.status == 200, await response.text()
        if not stream:
            answer = await response.json()
            total = time.perf_counter() - start
            return total, total, answer["usage"]["completion_tokens"]
        async for line in response.content:
            if line.startswith(b"data: {"):
                tokens += len(json.loads(line[6:])["choices"][0]["token_ids"])
                first = first or time.perf_counter() - start
    return first, time.perf_counter() - start, tokens


async def load(url: str, concurrency: int, seconds: float, stream: bool, seed: int,
               mixed: bool = False) -> dict[str, float]:
    import random

    import aiohttp

    rng = random.Random(seed)
    ttfts: list[float] = []
    tokens = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await one_request(session, url, [rng.randrange(1, 2048) for _ in range(PROMPT_TOKENS)], stream)  # warm-up
        start = time.perf_counter()
        stop_at = start + seconds

        async def client() -> None:
            nonlocal tokens
            while time.perf_counter() < stop_at:
                prompt = [rng.randrange(1, 2048) for _ in range(PROMPT_TOKENS)]
                length = rng.choice(MIXED_OUTPUT_TOKENS) if mixed else OUTPUT_TOKENS
                ttft, _, count = await one_request(session, url, prompt, stream, length)
                ttfts.append(ttft)
                tokens += count

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ttfts.sort()
    return {"tokens_per_s": tokens / elapsed, "requests": len(ttfts), "ttft_p50": statistics.median(ttfts),
            "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))]}


# --- The anchors' workload: long-tailed lengths, a shared system prompt, Poisson arrivals -----------------

def workload(rate: float, count: int) -> list[tuple[float, list[int], int]]:
    """(arrival time in s, prompt, output tokens) of `count` requests; seeded: both servers get the same."""
    import random

    rng = random.Random(WORKLOAD_SEED * 1000 + int(rate * 10))
    system = [random.Random(WORKLOAD_SEED).randrange(1, 2048) for _ in range(SYSTEM_TOKENS)]

    def lognormal(median: float, sigma: float, low: int, high: int) -> int:
        return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))

    requests, at = [], 0.0
    for _ in range(count):
        at += rng.expovariate(rate)
        user = [rng.randrange(1, 2048) for _ in range(lognormal(*USER_TOKENS))]
        prompt = (system + user) if rng.random() < SYSTEM_SHARE else user
        requests.append((at, prompt, lognormal(*OUTPUT_LENGTHS)))
    return requests


async def open_loop(url: str, requests: list[tuple[float, list[int], int]], stream: bool) -> dict[str, float]:
    """Send each request at its arrival time whatever is still running; per-request TTFT and TPOT."""
    import aiohttp

    done: list[tuple[float, float, int]] = []
    rejected: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await one_request(session, url, requests[0][1], stream, 4)  # warm-up

        async def send(at: float, prompt: list[int], length: int) -> None:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            done.append(await one_request(session, url, prompt, stream, length, rejected))

        start = time.perf_counter()
        await asyncio.gather(*(send(*r) for r in requests))
        elapsed = time.perf_counter() - start
    ttfts = sorted(d[0] for d in done)
    tpots = sorted((total - first) / (count - 1) if count > 1 else 0.0 for first, total, count in done
                   if count)
    good = sum(1 for first, total, count in done
               if first <= TTFT_BOUND_S and (count < 2 or (total - first) / (count - 1) <= TPOT_BOUND_S))
    return {"tokens_per_s": sum(d[2] for d in done) / elapsed, "ttft_p50": statistics.median(ttfts),
            "ttft_p99": percentile(ttfts, 0.99), "tpot_p99": percentile(tpots, 0.99),
            "goodput": good / elapsed, "good": good, "requests": len(done), "elapsed": elapsed,
            "rejected": len(rejected)}


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def only(servers: dict[str, tuple[int, subprocess.Popen]], name: str) -> None:
    """Run only the server being measured: the others are stopped (SIGSTOP), for transformers' continuous
    batching loop polls its queue without sleeping when idle and would take a core from the one measured."""
    for other, (_, process) in servers.items():
        process.send_signal(signal.SIGCONT if other == name else signal.SIGSTOP)


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 s per closed-loop measurement instead of 20, 2 rates of 6 s of arrivals instead of "
                             "4 rates of 30 s (under 2 minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each server (default 1: on a shared 2-core machine more threads "
                             "make OpenMP spin against each other and the other server's idle threads)")
    parser.add_argument("--baseline-server", nargs=3, metavar=("KIND", "MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        kind, model_dir, port = args.baseline_server
        (baseline_server if kind == "static" else continuous_server)(Path(model_dir), int(port))
        return
    seconds = 3.0 if args.quick else 20.0
    rates, arrivals_s = ((4.0, 16.0), 6.0) if args.quick else (RATES, 30.0)
    closed = ((1, False), (16, False)) if args.quick else ((1, False), (4, False), (16, False), (16, True))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work / "model")
        (work / "server.yaml").write_text(json.dumps(
            {"servedModelName": NAME, "limits": {"maxBatchSize": 16, "maxConcurrentRequests": 1024}}))
        ours_port = free_port()
        servers = {"ours": (ours_port, subprocess.Popen(
            [str(bin_dir / "llmops-serve"), "--model", str(work / "model"), "--config", str(work / "server.yaml"),
             "--host", "127.0.0.1", "--port", str(ours_port)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))}
        for kind in ("static", "continuous"):
            port = free_port()
            servers[kind] = (port, subprocess.Popen(
                [sys.executable, __file__, "--baseline-server", kind, str(work / "model"), str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            for port, process in servers.values():
                wait_ready(port, process)
            print(f"cpu: {cpu_description()}")
            print(f"model: Llama hidden 256, 4 layers, vocab 2048; prompt {PROMPT_TOKENS} tokens, output "
                  f"{OUTPUT_TOKENS} tokens (EOS ignored), greedy; {seconds:.0f} s per measurement, fp32 on CPU, "
                  f"{args.threads} torch thread(s) per server")
            results: dict[tuple[str, int | str], dict[str, float]] = {}
            for concurrency, mixed in closed:
                for name, (port, _) in servers.items():
                    only(servers, name)
                    url = f"http://127.0.0.1:{port}/v1/completions"
                    result = asyncio.run(load(url, concurrency, seconds, stream=name != "static", seed=concurrency,
                                              mixed=mixed))
                    results[name, concurrency if not mixed else -concurrency] = result
                    label = f"c={concurrency}{' mixed' if mixed else ''}"
                    print(f"{label:<11} {name:<10} {result['tokens_per_s']:8.1f} tokens/s  "
                          f"TTFT p50 {result['ttft_p50'] * 1000:7.1f} ms  p99 {result['ttft_p99'] * 1000:7.1f} ms  "
                          f"({result['requests']} requests)", flush=True)
            print(f"workload: {SYSTEM_SHARE:.0%} of prompts open with a shared {SYSTEM_TOKENS}-token system prompt; "
                  f"user prompt lognormal median {USER_TOKENS[0]:.0f} tokens (sigma {USER_TOKENS[1]}, "
                  f"{USER_TOKENS[2]}-{USER_TOKENS[3]}), output median {OUTPUT_LENGTHS[0]:.0f} (sigma "
                  f"{OUTPUT_LENGTHS[1]}, {OUTPUT_LENGTHS[2]}-{OUTPUT_LENGTHS[3]}); Poisson arrivals for "
                  f"{arrivals_s:.0f} s per rate; goodput bounds TTFT <= {TTFT_BOUND_S * 1000:.0f} ms, "
                  f"TPOT <= {TPOT_BOUND_S * 1000:.0f} ms", flush=True)
            for rate in rates:
                requests = workload(rate, max(10, round(rate * arrivals_s)))
                for name, (port, _) in servers.items():
                    only(servers, name)
                    result = asyncio.run(open_loop(f"http://127.0.0.1:{port}/v1/completions", requests,
                                                   stream=name != "static"))
                    results[name, f"rate={rate:g}"] = result
                    print(f"rate={rate:<5g} {name:<10} {result['tokens_per_s']:8.1f} tokens/s  TTFT p50 "
                          f"{result['ttft_p50'] * 1000:7.1f} ms  p99 {result['ttft_p99'] * 1000:7.1f} ms  TPOT p99 "
                          f"{result['tpot_p99'] * 1000:6.1f} ms  goodput {result['goodput']:5.2f} req/s "
                          f"({result['good']}/{result['requests']} good, {result['rejected']} rejected)", flush=True)
        finally:
            for _, process in servers.values():
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
            for _, process in servers.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    top = f"rate={rates[-1]:g}"
    ours, static, continuous = (results[name, top] for name in ("ours", "static", "continuous"))

    def goodput_ratio(base: dict[str, float]) -> float:
        # A baseline goodput of 0 counts as one request over the run: the ratio stays finite, a lower bound.
        return ours["goodput"] / max(base["goodput"], 1 / base["elapsed"])

    one = results["ours", 1]["tokens_per_s"] / results["static", 1]["tokens_per_s"]
    equal16 = results["ours", 16]["tokens_per_s"] / results["static", 16]["tokens_per_s"]
    print(f"serve_throughput: ratio={goodput_ratio(static):.2f} vs_continuous={goodput_ratio(continuous):.2f} "
          f"{top} goodput_ours={ours['goodput']:.2f} goodput_static={static['goodput']:.2f} "
          f"goodput_continuous={continuous['goodput']:.2f} ttft_p99_ms_ours={ours['ttft_p99'] * 1000:.0f} "
          f"ttft_p99_ms_continuous={continuous['ttft_p99'] * 1000:.0f} one_client={one:.2f} equal16={equal16:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
