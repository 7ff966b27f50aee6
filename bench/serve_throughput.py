"""Serving throughput: output tokens/s and time to first token of our server (continuous batching over a KV
cache) versus a baseline of transformers' `generate` behind a minimal aiohttp server with static batching,
same model, same run, at 1, 4 and 16 concurrent clients.

Model: a randomly initialised Llama (hidden 256, 4 layers, 8 heads, 4 KV heads, vocab 2048; BPE trained on
the standard library's pydoc topics). Every request: a fixed prompt of PROMPT_TOKENS token ids and exactly
OUTPUT_TOKENS generated tokens, end-of-sequence ignored (ours: `ignore_eos`; baseline: `min_new_tokens`).
A last, extra measurement at 16 varies the output length per request (8 to 128 tokens), which static
batching pays for by running every batch to its longest member; it is printed but not part of the ratio.
Clients are closed loops: each sends its next request when the last one is answered. Ours streams (TTFT is
the first token's arrival); the baseline's batch returns all at once (its TTFT is the whole answer), as a
static batch of `generate` cannot stream per request. Both servers run as their own processes, measured in
turn at each concurrency. Last line: `serve_throughput: ratio=X.XX` (ours / baseline tokens/s at 16).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT_TOKENS = 32
OUTPUT_TOKENS = 64
MIXED_OUTPUT_TOKENS = (8, 16, 32, 64, 128)
"""Output lengths of the extra `mixed` measurement (not part of the ratio): what chat traffic looks like."""
BASELINE_MAX_BATCH = 16
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
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/readyz", lambda _: web.json_response({}))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        task = asyncio.create_task(batcher())
        await asyncio.Event().wait()
        task.cancel()

    asyncio.run(main())


# --- Load generation --------------------------------------------------------------------------------------

async def one_request(session, url: str, prompt: list[int], stream: bool,
                      max_tokens: int = OUTPUT_TOKENS) -> tuple[float, float, int]:
    """(time to first token, total time, output tokens)."""
    import aiohttp

    body = {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": stream, "return_token_ids": True}
    start = time.perf_counter()
    first, tokens = 0.0, 0
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=600)) as response:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    parser.add_argument("--quick", action="store_true", help="4 s per measurement instead of 20 (under 2 minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each server (default 1: on a shared 2-core machine more threads "
                             "make OpenMP spin against each other and the other server's idle threads)")
    parser.add_argument("--baseline-server", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(Path(args.baseline_server[0]), int(args.baseline_server[1]))
        return
    seconds = 4.0 if args.quick else 20.0
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work / "model")
        (work / "server.yaml").write_text(json.dumps(
            {"servedModelName": NAME, "limits": {"maxBatchSize": 16, "maxConcurrentRequests": 64}}))
        ours_port, base_port = free_port(), free_port()
        servers = {
            "ours": (ours_port, subprocess.Popen(
                [str(bin_dir / "llmops-serve"), "--model", str(work / "model"), "--config", str(work / "server.yaml"),
                 "--host", "127.0.0.1", "--port", str(ours_port)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)),
            "baseline": (base_port, subprocess.Popen(
                [sys.executable, __file__, "--baseline-server", str(work / "model"), str(base_port)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)),
        }
        try:
            for port, process in servers.values():
                wait_ready(port, process)
            print(f"model: Llama hidden 256, 4 layers, vocab 2048; prompt {PROMPT_TOKENS} tokens, output "
                  f"{OUTPUT_TOKENS} tokens (EOS ignored), greedy; {seconds:.0f} s per measurement, fp32 on CPU, "
                  f"{args.threads} torch thread(s) per server")
            results: dict[tuple[str, int], dict[str, float]] = {}
            for concurrency, mixed in ((1, False), (4, False), (16, False), (16, True)):
                for name, (port, _) in servers.items():
                    url = f"http://127.0.0.1:{port}/v1/completions"
                    result = asyncio.run(load(url, concurrency, seconds, stream=name == "ours", seed=concurrency,
                                              mixed=mixed))
                    results[name, concurrency if not mixed else -concurrency] = result
                    label = f"c={concurrency}{' mixed' if mixed else ''}"
                    print(f"{label:<11} {name:<9} {result['tokens_per_s']:8.1f} tokens/s  "
                          f"TTFT p50 {result['ttft_p50'] * 1000:7.1f} ms  p99 {result['ttft_p99'] * 1000:7.1f} ms  "
                          f"({result['requests']} requests)", flush=True)
        finally:
            for _, process in servers.values():
                process.send_signal(signal.SIGTERM)
            for _, process in servers.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    ours, base = results["ours", 16], results["baseline", 16]
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    print(f"serve_throughput: ratio={ratio:.2f} ours_tokens_per_s={ours['tokens_per_s']:.0f} "
          f"baseline_tokens_per_s={base['tokens_per_s']:.0f} ttft_p99_ms_ours={ours['ttft_p99'] * 1000:.0f} "
          f"ttft_p99_ms_baseline={base['ttft_p99'] * 1000:.0f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
