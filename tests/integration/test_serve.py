"""The model server over real HTTP: output equal to transformers' greedy generate, the official OpenAI client,
limits, API key, bad input, metrics and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.trainer.serve.metrics import METRICS
from llmops.trainer.serve.server import FALLBACK_CHAT_TEMPLATE
from tests.integration.conftest import BIN, free_port, wait_until

KEY = "sk-test-7f3a"
NAME = "tiny"
LIMITS = {"maxPromptTokens": 100, "maxNewTokens": 48, "maxRequestBytes": 4096, "maxConcurrentRequests": 3,
          "maxBatchSize": 8}
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPTS = ["To be, or not to be", "The king", "Good my lord, what is the matter with you", "O"]


class ServerProcess:
    def __init__(self, command: list[str], tmp: Path, limits: dict, api_key: str | None = None, *,
                 drain_seconds: int = 20, wait: bool = True):
        self.port = free_port()
        config = tmp / "server.yaml"
        config.write_text(yaml.safe_dump({"servedModelName": NAME, "limits": limits, "drainSeconds": drain_seconds}))
        args = ["--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)]
        if api_key:
            (tmp / "key").write_text(api_key + "\n")
            args += ["--api-key-file", str(tmp / "key")]
        self.log = tmp / "server.log"
        self.process = subprocess.Popen(command + args, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        try:
            wait_until("the server to be ready", self.ready, timeout=90)
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        return status_of(f"{self.url}/readyz") == 200

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def server(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess([str(BIN / "llmops-serve"), "--model", str(base_model)],
                            tmp_path_factory.mktemp("serve"), LIMITS, api_key=KEY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hf(base_model: Path) -> tuple:
    return AutoModelForCausalLM.from_pretrained(base_model).eval(), AutoTokenizer.from_pretrained(base_model)


def greedy(hf: tuple, prompt_ids: list[int], max_new: int) -> list[int]:
    model, _ = hf
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def status_of(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:  # not listening (yet, or any more)
        return 0


def post(server: ServerProcess, path: str, body: dict | bytes, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=content, headers=headers if headers is not None else AUTH,
                      timeout=30)


def stream(server: ServerProcess, path: str, body: dict) -> list[dict]:
    chunks = []
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}, headers=AUTH, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    return [json.loads(c) for c in chunks[:-1]]


class BackgroundStream:
    """A streamed completion read on a thread while the test does something else (e.g. SIGTERM): `lines` are its
    `data:` payloads as they arrive, `first` is set at the first one."""

    def __init__(self, server: ServerProcess, request: dict, timeout: float):
        self.lines: list[str] = []
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(server, {**request, "stream": True}, timeout))
        self.thread.start()

    def _read(self, server: ServerProcess, request: dict, timeout: float) -> None:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=request, timeout=timeout) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.lines.append(line[6:])
                    self.first.set()


def metric(server: ServerProcess, name: str, labels: str = "") -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_completion_equals_transformers_greedy_token_for_token(server: ServerProcess, hf: tuple,
                                                               streamed: bool) -> None:
    _, tokenizer = hf
    for prompt in PROMPTS[:2]:
        want = greedy(hf, tokenizer(prompt)["input_ids"], 40)
        body = {"model": NAME, "prompt": prompt, "max_tokens": 40, "temperature": 0, "return_token_ids": True}
        if streamed:
            chunks = stream(server, "/v1/completions", body)
            ids = [t for c in chunks for t in c["choices"][0]["token_ids"]]
            text = "".join(c["choices"][0]["text"] for c in chunks)
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            answer = post(server, "/v1/completions", body).json()
            choice = answer["choices"][0]
            ids, text, finish = choice["token_ids"], choice["text"], choice["finish_reason"]
            assert answer["usage"]["completion_tokens"] == len(want)
        assert ids == want
        assert text == tokenizer.decode(want, skip_special_tokens=True)
        assert finish == ("stop" if want[-1] == tokenizer.eos_token_id else "length")


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_chat_equals_transformers_greedy_with_the_fallback_template(server: ServerProcess, hf: tuple,
                                                                    streamed: bool) -> None:
    _, tokenizer = hf
    messages = [{"role": "system", "content": "Speak verse."}, {"role": "user", "content": "Who is there?"}]
    text = tokenizer.apply_chat_template(messages, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False,
                                         add_generation_prompt=True)
    assert text == "system: Speak verse.\nuser: Who is there?\nassistant: "  # as llmops-finetune formats chats
    want = greedy(hf, tokenizer(text, add_special_tokens=False)["input_ids"], 30)
    body = {"model": NAME, "messages": messages, "max_tokens": 30, "temperature": 0, "return_token_ids": True}
    if streamed:
        chunks = stream(server, "/v1/chat/completions", body)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        ids = [t for c in chunks for t in c["choices"][0].get("token_ids", [])]
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    else:
        answer = post(server, "/v1/chat/completions", body).json()
        assert answer["object"] == "chat.completion"
        ids, content = answer["choices"][0]["token_ids"], answer["choices"][0]["message"]["content"]
    assert ids == want
    assert content == tokenizer.decode(want, skip_special_tokens=True)


@pytest.mark.slow
def test_concurrent_requests_of_different_lengths_each_equal_generate(server: ServerProcess, hf: tuple) -> None:
    _, tokenizer = hf
    jobs = [(prompt, 8 + 11 * i) for i, prompt in enumerate(PROMPTS)] * 2  # 8 in flight > maxConcurrent 3
    wants = [greedy(hf, tokenizer(p)["input_ids"], n) for p, n in jobs]

    def ask(job: tuple[str, int]) -> httpx.Response:
        body = {"model": NAME, "prompt": job[0], "max_tokens": job[1], "temperature": 0, "return_token_ids": True,
                "stream": job[1] % 2 == 1}
        for _ in range(100):  # over the concurrency limit the server says 429: retry as a client would
            response = post(server, "/v1/completions", body)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers["Retry-After"]) / 20)
        raise AssertionError("still 429 after 100 tries")

    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(ask, jobs))
    for response, want, (_, n) in zip(responses, wants, jobs, strict=True):
        assert response.status_code == 200, response.text
        if n % 2:
            chunks = [json.loads(line[6:]) for line in response.text.split("\n\n") if line[6:] not in ("", "[DONE]")]
            ids = [t for c in chunks for t in c["choices"][0]["token_ids"]]
        else:
            ids = response.json()["choices"][0]["token_ids"]
        assert ids == want


@pytest.mark.slow
def test_the_official_openai_client_works(server: ServerProcess, hf: tuple) -> None:
    from openai import OpenAI

    _, tokenizer = hf
    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == [NAME]
    want = tokenizer.decode(greedy(hf, tokenizer(PROMPTS[0])["input_ids"], 20), skip_special_tokens=True)
    completion = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=20, temperature=0)
    assert completion.choices[0].text == want and completion.usage.completion_tokens > 0
    streamed = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=20, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want
    chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hail!"}], max_tokens=12,
                                          temperature=0, seed=3)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    pieces = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hail!"}],
                                            max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(pieces)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    sampled = [client.completions.create(model=NAME, prompt="The", max_tokens=16, temperature=1.0, top_p=0.9,
                                         seed=11, n=2, stop=["\n"]) for _ in range(2)]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]  # seeded: reproducible
    assert all("\n" not in c.text for c in sampled[0].choices)
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4", prompt="x")
    assert caught.value.code == "model_not_found"


@pytest.mark.slow
def test_usage_counts_each_prompt_once_however_many_choices_share_it(server: ServerProcess, hf: tuple) -> None:
    from openai import OpenAI

    _, tokenizer = hf
    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    fixed = {"ignore_eos": True}  # every choice runs to max_tokens, so completion tokens are known
    lengths = [len(tokenizer(p)["input_ids"]) for p in PROMPTS[:2]]
    counted_before = metric(server, "llmops_serve_prompt_tokens_total")
    one = client.completions.create(model=NAME, prompt=PROMPTS[0], n=2, max_tokens=5, seed=1, extra_body=fixed)
    assert (one.usage.prompt_tokens, one.usage.completion_tokens, one.usage.total_tokens) == \
        (lengths[0], 2 * 5, lengths[0] + 2 * 5)
    assert metric(server, "llmops_serve_prompt_tokens_total") == counted_before + lengths[0]
    two = client.completions.create(model=NAME, prompt=PROMPTS[:2], n=2, max_tokens=5, seed=1, extra_body=fixed)
    assert len(two.choices) == 4
    assert (two.usage.prompt_tokens, two.usage.completion_tokens) == (sum(lengths), 4 * 5)

    messages = [{"role": "user", "content": "Who is there?"}]
    text = tokenizer.apply_chat_template(messages, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False,
                                         add_generation_prompt=True)
    chat_prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    chat = client.chat.completions.create(model=NAME, messages=messages, n=2, max_tokens=4, extra_body=fixed)
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (chat_prompt, 2 * 4)
    streamed = list(client.chat.completions.create(model=NAME, messages=messages, n=2, max_tokens=4, stream=True,
                                                   stream_options={"include_usage": True}, extra_body=fixed))
    assert (streamed[-1].usage.prompt_tokens, streamed[-1].usage.completion_tokens) == (chat_prompt, 2 * 4)


@pytest.mark.slow
def test_each_limit_answers_its_status_and_names_itself(server: ServerProcess) -> None:
    cases = [
        ({"prompt": "the king " * 60}, 400, "maxPromptTokens=100"),
        ({"prompt": [5] * 101}, 400, "prompt has 101 tokens, over the limit maxPromptTokens=100"),
        ({"prompt": "x", "max_tokens": 49}, 400, "maxNewTokens=48"),
        ({"prompt": "x", "max_tokens": 10**12}, 400, "maxNewTokens=48"),
        ({"prompt": [5] * 90, "max_tokens": 48}, 400, "exceed the context of 128 tokens"),  # the model's
        ({"prompt": ["a", "b", "c"], "n": 3}, 400, "maxBatchSize=8"),
        ({"prompt": "x" * 5000}, 413, "maxRequestBytes=4096"),
    ]
    for extra, status, words in cases:
        response = post(server, "/v1/completions", {"model": NAME, **extra})
        assert response.status_code == status, (extra, response.text)
        assert words in response.json()["error"]["message"]


def _slow_request(server: ServerProcess, body: bytes) -> socket.socket:
    """A generation request whose body has not all arrived: it holds a concurrency slot until completed."""
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:1])
    return conn


def _finish_slow_request(conn: socket.socket, body: bytes) -> str:
    conn.sendall(body[1:])
    conn.settimeout(30)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        data = conn.recv(65536)
        if not data:
            break
        reply += data
    conn.close()
    return reply.decode()


@pytest.mark.slow
def test_full_concurrency_answers_429_with_retry_after(server: ServerProcess) -> None:
    body = json.dumps({"model": NAME, "prompt": "The king", "max_tokens": 3}).encode()
    held = [_slow_request(server, body) for _ in range(LIMITS["maxConcurrentRequests"])]
    deadline, response = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        response = post(server, "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 1})
        if response.status_code == 429:
            break
    assert response is not None and response.status_code == 429, response.text if response else None
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert "maxConcurrentRequests is 3" in response.json()["error"]["message"]
    for conn in held:
        assert _finish_slow_request(conn, body).startswith("HTTP/1.1 200")
    assert post(server, "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 1}).status_code == 200


@pytest.mark.slow
def test_api_key_guards_the_api_but_not_probes_or_metrics(server: ServerProcess) -> None:
    body = {"model": NAME, "prompt": "x", "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = post(server, "/v1/completions", body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/v1/models", headers=AUTH).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server.url}{path}").status_code == 200


@pytest.mark.slow
def test_bad_input_gets_openai_errors_while_a_parallel_request_succeeds(server: ServerProcess) -> None:
    good = {"model": NAME, "prompt": PROMPTS[2], "max_tokens": 40, "temperature": 0, "return_token_ids": True,
            "ignore_eos": True}
    bad: list[tuple[bytes | dict, int, str | None]] = [
        (b'{"model": "tiny", "prompt": ', 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "tiny", "prompt": "\xff\xfe"}', 400, "invalid_encoding"),
        (b'{"model": "tiny", "prompt": "x", "max_tokens": NaN}', 400, "invalid_json"),
        ({"model": NAME, "prompt": "x", "max_tokens": "many"}, 400, "invalid_value"),
        ({"model": NAME, "prompt": "x", "max_tokens": -5}, 400, "invalid_value"),
        ({"model": NAME, "prompt": {"text": "x"}}, 400, "invalid_value"),
        ({"model": "gpt-4", "prompt": "x"}, 404, "model_not_found"),
        ({"model": NAME, "prompt": ""}, 400, "empty_prompt"),
        ({"model": NAME, "prompt": []}, 400, "empty_prompt"),
        ({"model": NAME, "prompt": [10**9]}, 400, None),
        ({"model": NAME, "messages": "hi"}, 400, "invalid_value"),
    ]
    with ThreadPoolExecutor(1) as pool:
        parallel = pool.submit(post, server, "/v1/completions", good)
        for body, status, code in bad:
            path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
            response = post(server, path, body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
            assert error["code"] == code, (body, error)
        answer = parallel.result()
    assert answer.status_code == 200
    assert len(answer.json()["choices"][0]["token_ids"]) == 40
    assert httpx.get(f"{server.url}/v1/nowhere", headers=AUTH).status_code == 404
    assert httpx.get(f"{server.url}/v1/completions", headers=AUTH).status_code == 405
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.slow
def test_metrics_move_when_requests_are_served(server: ServerProcess) -> None:
    exposition = httpx.get(f"{server.url}/metrics").text
    for name in METRICS:
        assert f"# HELP {name.removesuffix('_total')}" in exposition or f"# HELP {name}" in exposition, name
    ok = '{code="200",route="/v1/completions"}'
    before = {name: metric(server, name) for name in ("llmops_serve_output_tokens_total",
                                                       "llmops_serve_time_to_first_token_seconds_count",
                                                       "llmops_serve_time_per_output_token_seconds_count")}
    requests_before = metric(server, "llmops_serve_requests_total", ok)
    not_found_before = metric(server, "llmops_serve_requests_total", '{code="404",route="/v1/completions"}')
    answer = post(server, "/v1/completions", {"model": NAME, "prompt": "The", "max_tokens": 5, "ignore_eos": True})
    post(server, "/v1/completions", {"model": "nope", "prompt": "The"})
    assert answer.status_code == 200
    assert metric(server, "llmops_serve_requests_total", ok) == requests_before + 1
    assert metric(server, "llmops_serve_requests_total", '{code="404",route="/v1/completions"}') == not_found_before + 1
    assert metric(server, "llmops_serve_output_tokens_total") == before["llmops_serve_output_tokens_total"] + 5
    assert metric(server, "llmops_serve_time_to_first_token_seconds_count") == \
        before["llmops_serve_time_to_first_token_seconds_count"] + 1
    assert metric(server, "llmops_serve_time_per_output_token_seconds_count") == \
        before["llmops_serve_time_per_output_token_seconds_count"] + 1
    assert metric(server, "llmops_serve_running_sequences") == 0


@pytest.mark.slow
def test_a_shared_prompt_prefix_is_served_from_the_prefix_cache_and_output_stays_equal(server: ServerProcess,
                                                                                     hf: tuple) -> None:
    system = list(range(10, 50))  # token ids: 2 full 16-token blocks, and more
    hits = metric(server, "llmops_serve_prefix_cache_hit_tokens_total")
    queried = metric(server, "llmops_serve_prefix_cache_query_tokens_total")
    for tail in ([60, 61, 62], [70, 71]):
        prompt = system + tail
        body = {"model": NAME, "prompt": prompt, "max_tokens": 12, "temperature": 0, "return_token_ids": True}
        assert post(server, "/v1/completions", body).json()["choices"][0]["token_ids"] == greedy(hf, prompt, 12)
    assert metric(server, "llmops_serve_prefix_cache_query_tokens_total") == queried + 2 * len(system) + 5
    assert metric(server, "llmops_serve_prefix_cache_hit_tokens_total") >= hits + 32  # the second's 2 blocks


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_then_exits_0(base_model: Path, tmp_path: Path) -> None:
    running = ServerProcess([str(BIN / "llmops"), "serve", str(base_model)], tmp_path, {"maxNewTokens": 100})
    try:
        assert f"at http://127.0.0.1:{running.port}/v1" in running.log.read_text()
        body = json.dumps({"model": NAME, "prompt": "x", "max_tokens": 2}).encode()
        held = _slow_request(running, body)  # keeps the drain going while we look at it
        reader = BackgroundStream(running, {"model": NAME, "prompt": "The king", "max_tokens": 100,
                                            "ignore_eos": True, "return_token_ids": True}, timeout=30)
        chunks = reader.lines
        assert reader.first.wait(30)
        running.process.send_signal(signal.SIGTERM)
        wait_until("/readyz to turn 503", lambda: status_of(f"{running.url}/readyz") == 503, timeout=10)
        refused = httpx.post(f"{running.url}/v1/completions", json={"model": NAME, "prompt": "x"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert _finish_slow_request(held, body).startswith("HTTP/1.1 200")
        reader.thread.join(30)
        assert chunks[-1] == "[DONE]"
        assert sum(len(json.loads(c)["choices"][0]["token_ids"]) for c in chunks[:-1]) == 100
        assert json.loads(chunks[-2])["choices"][0]["finish_reason"] == "length"
        assert running.process.wait(30) == 0
    finally:
        running.stop()


def test_a_missing_model_file_fails_at_once_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = subprocess.run([str(BIN / "llmops-serve"), "--model", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 78
    assert "has no weights: expected one of model.safetensors" in result.stderr
    result = subprocess.run([str(BIN / "llmops"), "serve", str(tmp_path / "absent")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 78 and "does not exist" in result.stderr


def test_while_loading_readyz_and_generation_answer_503(tmp_path: Path) -> None:
    from llmops.trainer.config.serve import ServerConfig
    from llmops.trainer.serve.server import Server

    server = Server(ServerConfig(), str(tmp_path), host="127.0.0.1", port=free_port())
    loaded = threading.Event()
    server.load_blocking = lambda: loaded.wait(30)  # type: ignore[method-assign]  # a model that takes its time
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(asyncio.run(server.serve())))
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        wait_until("listening", lambda: status_of(f"{url}/healthz") == 200)
        assert httpx.get(f"{url}/readyz").json() == {"status": "loading"}
        assert httpx.get(f"{url}/readyz").status_code == 503
        response = httpx.post(f"{url}/v1/completions", json={"model": tmp_path.name, "prompt": "x"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "loading"
        assert response.headers["Retry-After"] == "5"
    finally:
        server._loop.call_soon_threadsafe(server.request_stop)
        loaded.set()
        thread.join(30)
    assert codes == [0]
