"""The HTTP server: OpenAI-compatible routes over the engine, limits, API key, metrics and graceful drain.

Life of the process: listen at once (`/healthz` 200; `/readyz` and the `/v1` routes 503 with a JSON error), load
the model in a thread, then `/readyz` 200. On SIGTERM (or SIGINT): `/readyz` 503 and new generation requests
503, in-flight requests run to their end for up to `drainSeconds`; those still running then are ended at once
(a stream gets an error event and `[DONE]`, a whole answer a 503), and the process exits 0.

Importing torch and transformers takes seconds, so this module imports neither: the modules that do (engine,
runner, sampling, logprobs) are imported where first used, by the loading thread once the port is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from llmops.trainer.config.exit_codes import CONFIG_ERROR, SUCCESS
from llmops.trainer.config.serve import ServerConfig

from .detokenize import TextStream
from .loader import LoadedModel, ModelLoadError, load, localize
from .metrics import ServerMetrics
from .protocol import ApiError, ChatRequest, CompletionRequest, FinishReason, validation_error

if TYPE_CHECKING:  # torch-backed: imported at run time only once the model loads (see the module docstring)
    from .engine import Engine, Sequence, StepOutput
    from .runner import TokenScore

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Reachable without the API key: probes and scrapes carry none."""
GENERATION_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})
API_PREFIX = "/v1/"
"""Routes that need the model: 503 while it loads."""
PREFIX_CACHE_SHARE = 0.25
"""The prefix cache's pool holds this share of the batch slots' KV-cache positions (0: no prefix cache)."""
PREFIX_BLOCK_TOKENS = 16
"""Tokens per prefix-cache block: a shared prefix is reused in whole blocks."""
PREFILL_CHUNK_TOKENS = 512
"""Prompt tokens prefilled per engine iteration; a longer prompt is prefilled in chunks of this size, so it
delays the running sequences' next token by one chunk's time, not its whole prefill."""
SHUTDOWN_GRACE_SECONDS = 1.0
"""After the drain, how long requests that were ended (and probes) get to finish writing before the server
closes their connections."""

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
"""For tokenizers without a chat template: `role: content` lines, then `assistant: `, the format our
fine-tuning recipe (`llmops-finetune`, sft) trains chat records in when the tokenizer has no template."""


Event = tuple[int, str, list[int], str | None]
"""What one choice produced: (choice index, text to show, new token ids, finish reason or None)."""


class Cut(Exception):
    """Ends a request still generating when the drain is over (`drainSeconds` elapsed, 0: at once)."""


CUT = (-1, -1, None, None)
"""The queue item that tells a request's event loop the drain is over."""


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"


@dataclass
class Choice:
    """The HTTP side of one generated sequence."""

    sequence: Sequence
    text: TextStream
    ids: list[int] = field(default_factory=list)
    scores: list[TokenScore | None] = field(default_factory=list)
    """Scores of `ids`, when the request asked for logprobs."""
    finish_reason: str | None = None
    first_at: float = 0.0
    last_at: float = 0.0


class Server:
    def __init__(self, config: ServerConfig, model_uri: str, *, host: str = "0.0.0.0", port: int | None = None,
                 api_key: str | None = None, cache_dir: Path | None = None, device: str | None = None):
        self.config, self.limits = config, config.limits
        self.model_uri, self.cache_dir, self.device = model_uri, cache_dir, device
        self.host, self.port = host, port if port is not None else config.port
        self.api_key = api_key
        self.model_name = config.served_model_name or Path(model_uri.rstrip("/")).name or "model"
        self.metrics = ServerMetrics()
        self.state = State.LOADING
        self.inflight = 0
        self.generating: set[asyncio.Queue] = set()
        """The output queues of requests generating now; the drain's end puts CUT in each."""
        self.loaded: LoadedModel | None = None
        self.context = 0
        """Longest sequence (prompt + output) a request may reach: the model's context within the limits."""
        self.vocab_size = 0
        self.engine: Engine | None = None
        self.created = int(time.time())
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- Model ---------------------------------------------------------------------------------------

    def load_blocking(self) -> None:
        """Load weights and start the engine (runs in a worker thread; the event loop keeps answering)."""
        from .engine import Engine
        from .runner import Runner, UnsupportedModel

        loaded = load(localize(self.model_uri, self.cache_dir), self.config.dtype, self.device)
        self.context = min(loaded.context_length, self.limits.max_prompt_tokens + self.limits.max_new_tokens)
        try:
            blocks = int(self.limits.max_batch_size * self.context * PREFIX_CACHE_SHARE) // PREFIX_BLOCK_TOKENS
            runner = Runner(loaded.model, slots=self.limits.max_batch_size, max_len=self.context,
                            prefix_blocks=blocks, block_tokens=PREFIX_BLOCK_TOKENS)
        except UnsupportedModel as error:
            raise ModelLoadError(str(error)) from error
        self.vocab_size = loaded.model.config.vocab_size
        engine = Engine(runner, loaded.eos_ids, self._emit_threadsafe,
                        prefill_tokens=PREFILL_CHUNK_TOKENS)
        self.metrics.watch_engine(lambda: engine.queued, lambda: len(engine.running),
                                  lambda: engine.cached_tokens / runner.shape.tokens)
        self.metrics.watch_prefix_cache(lambda: engine.prefix_query_tokens, lambda: engine.prefix_hit_tokens)
        engine.start()
        self.loaded, self.engine = loaded, engine

    def _emit_threadsafe(self, outputs: list[StepOutput]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        for output in outputs:
            queue, index = output.sequence.sink
            queue.put_nowait((index, output.token, output.finish_reason, output.score))
        self.metrics.output_tokens.inc(sum(1 for o in outputs if o.token >= 0))

    # --- HTTP plumbing -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.limits.max_request_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.monotonic()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        counted = False
        try:
            self._authorize(request)
            if self.state is State.LOADING and route.startswith(API_PREFIX):
                raise ApiError(503, "the model is still loading; retry when /readyz answers 200",
                               type="server_error", code="loading", headers={"Retry-After": "5"})
            if route in GENERATION_ROUTES:
                self._admit(request)
                self.inflight += 1
                counted = True
            response = await handler(request)
        except ApiError as error:
            response = _error_response(error)
        except web.HTTPException as error:  # unknown route, wrong method, body over client_max_size
            response = _error_response(self._http_error(error))
        except Exception:  # a bug must cost one request, never the server
            log.exception("unhandled error on %s", request.path)
            response = _error_response(ApiError(500, "internal server error", type="server_error"))
        finally:
            if counted:
                self.inflight -= 1
        self.metrics.requests.labels(route, str(response.status)).inc()
        self.metrics.duration.labels(route).observe(time.monotonic() - started)
        return response

    def _http_error(self, error: web.HTTPException) -> ApiError:
        if error.status == 413:
            return ApiError(413, f"request body exceeds the limit maxRequestBytes={self.limits.max_request_bytes}",
                            code="request_too_large")
        return ApiError(error.status, error.reason, code="not_found" if error.status == 404 else None)

    def _authorize(self, request: web.Request) -> None:
        if self.api_key is None or request.path in OPEN_PATHS:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                           type="authentication_error", code="invalid_api_key")

    def _admit(self, request: web.Request) -> None:
        if self.state is State.DRAINING:
            raise ApiError(503, "the server is shutting down", type="server_error", code="draining")
        limit = self.limits.max_concurrent_requests
        if self.inflight >= limit:
            raise ApiError(429, f"too many concurrent requests: the limit maxConcurrentRequests is {limit}",
                           type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        length = request.content_length
        if length is not None and length > self.limits.max_request_bytes:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit maxRequestBytes="
                                f"{self.limits.max_request_bytes}", code="request_too_large")

    async def _parse(self, request: web.Request, model: type[BaseModel]) -> Any:
        raw = await request.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ApiError(400, f"request body is not valid UTF-8 (byte {error.start})",
                           code="invalid_encoding") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except ValueError as error:
            raise ApiError(400, f"request body is not valid JSON: {error}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_json")
        try:
            parsed = model.model_validate(data)
        except ValidationError as error:
            raise validation_error(error) from None
        if parsed.model != self.model_name:
            raise ApiError(404, f"model {parsed.model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")
        return parsed

    # --- Routes --------------------------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": self.state.value}, status=200 if self.state is State.READY else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.content_type = "text/plain"
        response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return response

    async def _models(self, _: web.Request) -> web.Response:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "llmops"}
        if self.context:  # as vLLM: the longest sequence a request may reach (clients size prompts by it)
            model["max_model_len"] = self.context
            # Ours: the longest prompt (maxPromptTokens may be below the context), e.g. for scoring windows.
            model["max_prompt_tokens"] = min(self.context, self.limits.max_prompt_tokens)
        return web.json_response({"object": "list", "data": [model]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body: CompletionRequest = await self._parse(request, CompletionRequest)
        given = body.prompts()
        prompts = [self._tokens(p) for p in given]
        if not prompts:
            raise ApiError(400, "prompt is empty", param="prompt", code="empty_prompt")
        echoed = None
        if body.echo:  # the prompt as sent; token-id prompts as their text
            echoed = [p if isinstance(p, str) else self._prompt_text(p) for p in given]
        return await self._generate(request, body, prompts, body.max_tokens, chat=False, started=started,
                                    echoed=echoed)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body: ChatRequest = await self._parse(request, ChatRequest)
        tokenizer = self.loaded.tokenizer
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        template = None if tokenizer.chat_template else FALLBACK_CHAT_TEMPLATE
        try:
            text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as error:  # template errors (e.g. a role the template refuses) are the client's
            raise ApiError(400, f"the chat template rejected the messages: {error}", param="messages") from None
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        return await self._generate(request, body, [prompt], body.max_new, chat=True, started=started)

    def _tokens(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.loaded.tokenizer(prompt)["input_ids"]
        if any(not 0 <= t < self.vocab_size for t in prompt):
            raise ApiError(400, f"prompt token ids must lie in [0, {self.vocab_size})", param="prompt")
        return prompt

    def _prompt_text(self, ids: list[int]) -> str:
        from .logprobs import decoder

        return decoder(self.loaded.tokenizer, skip_special_tokens=False)(ids)

    def _check(self, prompts: list[list[int]], max_new: int | None, n: int, chat: bool) -> int:
        """The request's max_tokens after every limit; each violation names its limit. max_tokens 0 (only
        scoring the prompt, with echo) lets a prompt fill the whole context."""
        param = "messages" if chat else "prompt"
        limits = self.limits
        if any(not p for p in prompts):
            raise ApiError(400, f"{param} is empty: it has no tokens", param=param, code="empty_prompt")
        longest = max(len(p) for p in prompts)
        if longest > limits.max_prompt_tokens:
            raise ApiError(400, f"{param} has {longest} tokens, over the limit maxPromptTokens="
                                f"{limits.max_prompt_tokens}", param=param, code="prompt_too_long")
        if n * len(prompts) > limits.max_batch_size:
            raise ApiError(400, f"{n * len(prompts)} choices (n x prompts) exceed the limit maxBatchSize="
                                f"{limits.max_batch_size}", param="n")
        if max_new is not None and max_new > limits.max_new_tokens:
            raise ApiError(400, f"max_tokens={max_new} exceeds the limit maxNewTokens={limits.max_new_tokens}",
                           param="max_tokens", code="max_tokens_too_large")
        room = self.context - longest
        scoring_only = max_new == 0
        if max_new is None:
            max_new = min(limits.max_new_tokens, room)
        if max_new > room or (room < 1 and not scoring_only):
            raise ApiError(400, f"{param} ({longest} tokens) plus max_tokens ({max_new}) exceed the context of "
                                f"{self.context} tokens", param="max_tokens", code="context_length_exceeded")
        return max_new

    async def _generate(self, request: web.Request, body: CompletionRequest | ChatRequest, prompts: list[list[int]],
                        max_new: int | None, *, chat: bool, started: float,
                        echoed: list[str] | None = None) -> web.StreamResponse:
        """Run the prompts (`echoed`: their texts, to return before each completion) and answer."""
        from .engine import Group
        from .sampling import SamplingParams

        max_new = self._check(prompts, max_new, body.n, chat)
        logprobs = None if chat else body.logprobs
        params = SamplingParams(max_tokens=max_new, temperature=body.temperature, top_p=body.top_p,
                                seed=body.seed, ignore_eos=body.ignore_eos, logprobs=logprobs,
                                prompt_logprobs=logprobs if echoed is not None else None)
        queue: asyncio.Queue[tuple[int, int, str | None, TokenScore | None]] = asyncio.Queue()
        groups = [Group.of(prompt, params, body.n, [(queue, p * body.n + j) for j in range(body.n)])
                  for p, prompt in enumerate(prompts)]
        choices = [Choice(s, TextStream(self.loaded.tokenizer, body.stops)) for g in groups for s in g.sequences]
        for group in groups:
            self.engine.add(group)
        # As OpenAI counts: each prompt once, however many choices share it (completion tokens sum over choices).
        usage = {"prompt_tokens": sum(len(p) for p in prompts)}
        self.metrics.prompt_tokens.inc(usage["prompt_tokens"])
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        events = self._events(queue, choices, started)
        self.generating.add(queue)
        try:
            if body.stream:
                return await self._stream(request, body, events, choices, ident, usage, chat)
            async for _ in events:
                pass
        except Cut:
            raise _cut_error() from None
        finally:
            self.generating.discard(queue)
            for choice in choices:
                if choice.finish_reason is None:
                    self.engine.abort(choice.sequence)
        if any(c.finish_reason == FinishReason.ERROR for c in choices):
            raise ApiError(500, "generation failed; see the server log", type="server_error")
        usage["completion_tokens"] = sum(len(c.ids) for c in choices)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        out = [self._choice(body, index, c, chat, echoed[index // body.n] if echoed else None)
               for index, c in enumerate(choices)]
        return web.json_response({"id": ident, "object": "chat.completion" if chat else "text_completion",
                                  "created": int(time.time()), "model": self.model_name, "choices": out,
                                  "usage": usage})

    def _choice(self, body: CompletionRequest | ChatRequest, index: int, choice: Choice, chat: bool,
                echoed: str | None) -> dict:
        out: dict[str, Any] = {"index": index}
        if chat:
            out["message"] = {"role": "assistant", "content": choice.text.text}
        else:
            out["text"] = (echoed or "") + choice.text.text
        out |= {"logprobs": self._logprobs(body, choice, echoed), "finish_reason": choice.finish_reason}
        if body.return_token_ids:
            out["token_ids"] = choice.ids
        return out

    def _logprobs(self, body: CompletionRequest | ChatRequest, choice: Choice,
                  echoed: str | None) -> dict[str, list[Any]] | None:
        """The legacy logprobs object: the prompt's tokens first when echoed, then every generated token (the
        one that completed a stop string included, as token_ids and usage count them)."""
        if isinstance(body, ChatRequest) or body.logprobs is None:
            return None
        from .logprobs import completion_logprobs, decoder

        tokenizer = self.loaded.tokenizer
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        parts = []
        if echoed is not None:
            # Special tokens of the prompt keep their text (it is in the echoed prompt); generated ones are
            # left out of the text, so their tokens' texts are empty too.
            parts.append((decoder(tokenizer, False), choice.sequence.prompt, choice.sequence.prompt_scores, 0))
        parts.append((decoder(tokenizer, True), choice.ids, choice.scores, len(echoed or "")))
        for decode, ids, scores, offset in parts:
            for key, values in completion_logprobs(decode, ids, scores or [], offset).items():
                out[key] += values
        return out

    async def _events(self, queue: asyncio.Queue, choices: list[Choice],
                      started: float) -> AsyncIterator[list[Event]]:
        """Batches of (choice index, text to show, new token ids, finish reason) as tokens arrive, until every
        choice finished. A batch holds everything queued meanwhile: a busy server writes once per step, not per
        token."""
        left = len(choices)
        first = True
        while left:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            now = time.monotonic()
            if first:
                self.metrics.ttft.observe(now - started)
                first = False
            if CUT in items:
                raise Cut
            batch = []
            for index, token, reason, score in items:
                choice = choices[index]
                if choice.finish_reason is not None:  # tokens already under way when a stop string matched
                    continue
                piece, new = "", []
                if token >= 0:
                    choice.first_at = choice.first_at or now
                    choice.last_at = now
                    choice.ids.append(token)
                    choice.scores.append(score)
                    new = [token]
                    piece = choice.text.push(token)
                    if choice.text.stopped and reason is None:
                        reason = FinishReason.STOP
                        self.engine.abort(choice.sequence)
                if reason is not None:
                    choice.finish_reason = reason
                    piece += choice.text.flush()
                    left -= 1
                    if len(choice.ids) > 1:
                        self.metrics.tpot.observe((choice.last_at - choice.first_at) / (len(choice.ids) - 1))
                batch.append((index, piece, new, reason))
            if batch:
                yield batch

    async def _stream(self, request: web.Request, body: CompletionRequest | ChatRequest,
                      events: AsyncIterator[list[Event]], choices: list[Choice], ident: str, usage: dict[str, int],
                      chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created, kind = int(time.time()), "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice_list: list[dict], **extra: Any) -> bytes:
            data = {"id": ident, "object": kind, "created": created, "model": self.model_name,
                    "choices": choice_list, **extra}
            return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

        if chat:  # OpenAI opens each choice with the role
            await response.write(b"".join(chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}])
                                          for i in range(len(choices))))
        try:
            async for batch in events:
                out = []
                for index, piece, new, reason in batch:
                    if not piece and reason is None and not body.return_token_ids:
                        continue  # a token that completes no character yet: nothing to show
                    if chat:
                        entry: dict[str, Any] = {"index": index, "delta": {"content": piece} if piece else {}}
                    else:
                        entry = {"index": index, "text": piece}
                    entry |= {"logprobs": None, "finish_reason": reason}
                    if body.return_token_ids:
                        entry["token_ids"] = new
                    out.append(chunk([entry]))
                if out:
                    await response.write(b"".join(out))
        except ConnectionResetError:  # the client left; the caller aborts what is still generating
            return response
        except Cut:  # the drain is over: say so, and end the stream as a stream ends
            with contextlib.suppress(ConnectionResetError):
                await response.write(b"data: " + json.dumps(_cut_error().body()).encode() + b"\n\ndata: [DONE]\n\n")
                await response.write_eof()
            return response
        if any(c.finish_reason == FinishReason.ERROR for c in choices):
            error = ApiError(500, "generation failed; see the server log", type="server_error")
            await response.write(b"data: " + json.dumps(error.body()).encode() + b"\n\n")
        elif body.include_usage:
            completion = sum(len(c.ids) for c in choices)
            await response.write(chunk([], usage={**usage, "completion_tokens": completion,
                                                  "total_tokens": usage["prompt_tokens"] + completion}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # --- Process life --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def _drain(self) -> None:
        """Let in-flight requests run for up to drainSeconds, then end those still generating."""
        deadline = time.monotonic() + self.config.drain_seconds
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.inflight:
            return
        log.warning("drain over (drainSeconds=%d) with %d requests in flight: ending them",
                    self.config.drain_seconds, self.inflight)
        for queue in self.generating:
            queue.put_nowait(CUT)
        # Requests not yet generating (a body still arriving) are closed by runner.cleanup after its grace.
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self.generating and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def serve(self, on_listening: Callable[[str], None] | None = None) -> int:
        """Listen, load, serve until SIGTERM/SIGINT, drain; returns the exit code."""
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None,
                               shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        if threading.current_thread() is threading.main_thread():  # embedded in a thread: the host stops it
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.request_stop)
        if on_listening:
            on_listening(f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}/v1")
        code = SUCCESS
        loading = asyncio.ensure_future(asyncio.to_thread(self.load_blocking))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done() and loading.exception() is not None:
            error = loading.exception()
            print(f"llmops-serve: {error}", file=sys.stderr)
            if not isinstance(error, ModelLoadError):
                log.error("loading failed", exc_info=error)
            code = CONFIG_ERROR
        elif loading.done():
            self.state = State.READY
            log.info("model %s ready", self.model_name)
            await stopping
        self.state = State.DRAINING
        await self._drain()
        await runner.cleanup()
        if not loading.done():  # stopped while loading: the thread cannot be interrupted; exit anyway
            return code
        if self.engine:
            self.engine.stop()
        return code


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _cut_error() -> ApiError:
    return ApiError(503, "the server shut down before this request finished (its drainSeconds ran out)",
                    type="server_error", code="shutdown")


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)
