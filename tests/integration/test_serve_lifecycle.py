"""The server process's start and end as a user (and a kubelet) see them: the URL printed at once, 503 with a JSON
error while the model loads, 200 once loaded; on SIGTERM with `drainSeconds: 0`, requests still generating are
ended at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from tests.integration.conftest import BIN, wait_until
from tests.integration.test_serve import AUTH, KEY, NAME, BackgroundStream, ServerProcess, metric

LOADING_ERROR = {"message": "the model is still loading; retry when /readyz answers 200", "type": "server_error",
                 "param": None, "code": "loading"}
LONG = 4000
"""Tokens of a request that streams for seconds even on a fast machine."""


@pytest.fixture(scope="module")
def long_context_model(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model with the tiny model's tokenizer and a context of 4096 tokens."""
    config = AutoConfig.from_pretrained(base_model)
    config.max_position_embeddings = LONG + 96
    out = tmp_path_factory.mktemp("long") / "model"
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(out)
    return out


def test_the_server_opens_its_port_before_importing_torch() -> None:
    """Importing torch and transformers takes seconds: the CLI and the HTTP server must not, so the URL is printed
    and probes are answered at once (the loading thread imports them)."""
    probe = ("import sys, llmops.trainer.serve.cli, llmops.trainer.serve.server; "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


@pytest.mark.slow
def test_the_url_comes_at_once_and_the_api_answers_503_until_the_model_has_loaded(base_model: Path,
                                                                                   tmp_path: Path) -> None:
    started = time.monotonic()
    running = ServerProcess([str(BIN / "llmops-serve"), "--model", str(base_model)], tmp_path, {}, api_key=KEY,
                            wait=False)
    try:
        wait_until("the URL line", lambda: f"at {running.url}/v1" in running.log.read_text(), timeout=60)
        printed = time.monotonic() - started
        # Right after the URL line the model is still loading (importing torch alone takes seconds).
        readyz = httpx.get(f"{running.url}/readyz")
        completion = httpx.post(f"{running.url}/v1/completions", json={"model": NAME, "prompt": "x"}, headers=AUTH)
        models = httpx.get(f"{running.url}/v1/models", headers=AUTH)
        assert (readyz.status_code, readyz.json()) == (503, {"status": "loading"})
        for response in (completion, models):
            assert response.status_code == 503, response.text
            assert response.json() == {"error": LOADING_ERROR} and response.headers["Retry-After"] == "5"
        assert httpx.get(f"{running.url}/healthz").status_code == 200  # alive: the kubelet must not restart it

        running.wait_ready()
        assert time.monotonic() - started > printed
        answer = httpx.post(f"{running.url}/v1/completions", json={"model": NAME, "prompt": "The", "max_tokens": 3},
                            headers=AUTH, timeout=30)
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"] is not None
        assert httpx.get(f"{running.url}/v1/models", headers=AUTH).json()["data"][0]["id"] == NAME
    finally:
        running.stop()


@pytest.mark.slow
def test_drain_seconds_0_ends_in_flight_requests_at_once_on_sigterm(long_context_model: Path,
                                                                     tmp_path: Path) -> None:
    running = ServerProcess([str(BIN / "llmops-serve"), "--model", str(long_context_model)], tmp_path,
                            {"maxNewTokens": LONG}, drain_seconds=0)
    request = {"model": NAME, "prompt": "The king", "max_tokens": LONG, "ignore_eos": True, "return_token_ids": True}
    try:
        whole: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: whole.append(
            httpx.post(f"{running.url}/v1/completions", json=request, timeout=60)))
        waiting.start()
        reader = BackgroundStream(running, request, timeout=60)
        lines = reader.lines
        assert reader.first.wait(60)
        wait_until("both requests to generate", lambda: metric(running, "llmops_serve_running_sequences") == 2)

        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0
        exited = time.monotonic() - signalled
        reader.thread.join(10)
        waiting.join(10)

        assert lines[-1] == "[DONE]"
        assert json.loads(lines[-2])["error"]["code"] == "shutdown"
        streamed = sum(len(json.loads(c)["choices"][0]["token_ids"]) for c in lines[:-2])
        assert 0 < streamed < LONG
        assert whole[0].status_code == 503
        assert whole[0].json()["error"]["code"] == "shutdown"
        assert "drainSeconds" in whole[0].json()["error"]["message"]
        assert exited < 15, f"exited {exited:.1f}s after SIGTERM"
    finally:
        running.stop()
