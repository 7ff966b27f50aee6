"""Score a live OpenAI-compatible server (llmops-serve, vLLM) over HTTP, with the metrics the local scorer uses.

The server's tokenizer is unknown here, so everything is asked of the server itself, as lm-evaluation-harness's
API models do: `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 0` returns every prompt token with
its log-probability and its character offset (`text_offset`), and text is split into context and continuation
by those offsets: the continuation's tokens are the ones that start at or after the end of the context.

- A continuation's log-likelihood (multipleChoice) is the sum over its tokens.
- Perplexity uses the local scorer's rolling windows (`scoring.rolling_loglikelihood`) over the server's own
  tokens: a document that surely fits (fewer UTF-8 bytes than the window has tokens; a token covers at least
  one byte) is scored in one request after `documentPrefix`; a longer one is first cut at spaces into such
  pieces to learn where its tokens start, then scored window by window, each window's text cut at token starts
  and only its tokens after the previous window counted. A prompt holds a window and the token it predicts
  last (and perhaps a start token the server adds), so a window is the server's context less 2 tokens.
- Generation (exactMatch) is greedy: temperature 0, max_tokens from the task, stopping at the first newline
  (the local scorer keeps only the first line).

Requests run `concurrency` at a time; 429, 5xx, timeouts and connection errors are retried with exponential
backoff (Retry-After honoured) a bounded number of times.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.trainer.config.evaluate import ENDPOINT_TASKS, EndpointConfig, TaskRun, TaskType

ATTEMPTS = 8
"""Tries per request before the evaluation gives up on the server (about a minute of backoff in all)."""
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 20.0
WINDOW_RESERVE = 2
"""Tokens of the server's context a perplexity window leaves free: the token it predicts last and a start
token the server may put before the text itself."""

T = TypeVar("T")
R = TypeVar("R")

WHY_NOT = {
    TaskType.CLASSIFICATION: "it reads the model's classification head, which an OpenAI-compatible API does not "
                             "expose",
    TaskType.WIN_RATE: "it compares generations with a baseline model loaded from its weights",
    TaskType.LM_EVAL: "it runs lm-evaluation-harness on the model loaded in this process",
}


class UnsupportedTask(ValueError):
    """A task that an endpoint cannot be scored on; the message names the task and the reason."""


class EndpointError(RuntimeError):
    """The server refused a request, answered something that is not an OpenAI completion, or stayed
    unreachable; the message says which and what it answered. `permanent`: retrying cannot help (a wrong URL,
    model name, key, or a server without echo/logprobs)."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def check_tasks(tasks: Iterable[TaskRun]) -> None:
    """Fail before any request when a task cannot be scored over HTTP."""
    for task in tasks:
        if task.type not in ENDPOINT_TASKS:
            supported = ", ".join(t.value for t in ENDPOINT_TASKS)
            raise UnsupportedTask(f"task {task.name!r}: type {task.type.value} cannot be scored over an endpoint: "
                                  f"{WHY_NOT[task.type]}; an endpoint takes {supported} (or set modelUri)")


# --- The wire format we read (only what we use; anything else is ignored) ----------------------------------

class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Logprobs(_Wire):
    tokens: list[str]
    token_logprobs: list[float | None]
    text_offset: list[int]


class _Choice(_Wire):
    index: int = 0
    text: str
    logprobs: _Logprobs | None = None


class _Completion(_Wire):
    choices: list[_Choice] = Field(min_length=1)


class _ModelCard(_Wire):
    id: str
    max_model_len: int | None = None
    max_prompt_tokens: int | None = None  # llmops-serve's: below max_model_len when its limits say so


class _Models(_Wire):
    data: list[_ModelCard]


@dataclass(frozen=True)
class ScoredText:
    """A prompt as the server scored it: where each token starts in the prompt and its log-probability."""

    starts: list[int]
    """Character offset of each token in the prompt; negative for tokens the server put before it (a start
    token)."""
    logprobs: list[float | None]
    """None for the first token, which nothing predicts."""

    def region(self, begin: int) -> list[float | None]:
        """Log-probabilities of the tokens that start at or after character `begin`."""
        return [lp for start, lp in zip(self.starts, self.logprobs, strict=True) if start >= begin]


def scored_text(prompt: str, logprobs: _Logprobs) -> ScoredText:
    """Offsets rebased so that 0 is the prompt's first character.

    OpenAI's offsets index the echoed text; vLLM's add up each token's text on its own, so a start token the
    server adds (`<s>`) shifts them all. The prompt always ends where the last token ends, so the shift is
    that end minus the prompt's length (0 for servers that index the prompt itself, llmops-serve among them).
    """
    if not logprobs.tokens or len({len(logprobs.tokens), len(logprobs.token_logprobs),
                                    len(logprobs.text_offset)}) != 1:
        raise EndpointError("the server's logprobs have no tokens, or lists of different lengths", permanent=True)
    shift = logprobs.text_offset[-1] + len(logprobs.tokens[-1]) - len(prompt)
    return ScoredText([offset - shift for offset in logprobs.text_offset], list(logprobs.token_logprobs))


def text_pieces(text: str, budget: int) -> list[tuple[int, int]]:
    """(begin, end) character ranges that cover `text`, each at most `budget` UTF-8 bytes, cut before a run of
    whitespace where there is one (byte-level BPE and its relatives start a token there, so the pieces'
    tokens are the text's tokens)."""
    pieces, begin = [], 0
    while begin < len(text):
        end, size = begin, 0
        while end < len(text) and size + len(text[end].encode("utf-8")) <= budget:
            size += len(text[end].encode("utf-8"))
            end += 1
        if end < len(text):
            cut = next((i for i in range(end, begin, -1) if text[i].isspace() and not text[i - 1].isspace()), None)
            end = cut or end
        end = max(end, begin + 1)
        pieces.append((begin, end))
        begin = end
    return pieces


@dataclass(frozen=True)
class Window:
    """One perplexity window of a text, in characters."""

    begin: int
    """Where its text begins (the first token it holds as context)."""
    scored: int
    """Where the tokens it scores begin (those before were scored by earlier windows)."""
    end: int
    after_prefix: bool
    """It begins at the document's start, after the prefix token."""


def word_starts(text: str, starts: list[int]) -> list[bool]:
    """For each token start (and the end of the text), whether the text may be cut there without changing how
    the tokens around the cut are tokenized: the text's start and end, and the start of a run of whitespace
    (where byte-level BPE and its relatives begin a new pre-token)."""
    def clean(i: int) -> bool:
        return i in (0, len(text)) or (text[i].isspace() and not text[i - 1].isspace())
    return [clean(i) for i in starts] + [True]


def rolling_windows(bounds: list[int], cuttable: list[bool], context: int, stride: int) -> list[Window]:
    """The local scorer's rolling windows (`scoring.rolling_loglikelihood`) over n tokens whose character
    starts are bounds[:n] (bounds[n]: the text's end): of [prefix, t0, ..., t(n-1)], a window holds
    tokens[start..end] and scores t(done)..t(end-1). Each cut is moved inward to a token where the text may be
    cut (`cuttable`), when the window has one, so that the server tokenizes the window's text as it did the
    whole: a window never holds more tokens than `context` + 1 and no token is scored twice or not at all."""
    n, stride = len(bounds) - 1, max(1, min(stride, context))
    windows, done = [], 0
    while done < n:
        end = min(n, context if done == 0 else done + stride)
        start = max(0, end - context)
        first = max(0, start - 1)
        first = next((i for i in range(first, done) if cuttable[i]), first)
        end = next((i for i in range(end, done, -1) if cuttable[i]), end)
        windows.append(Window(bounds[first], bounds[done], bounds[end], after_prefix=start == 0))
        done = end
    return windows


class EndpointModel:
    """The Scorer of `run.py` for a served model: the same three questions, asked over HTTP."""

    def __init__(self, config: EndpointConfig, environ: Mapping[str, str] = os.environ):
        self.config = config
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.api_key_env:
            key = environ.get(config.api_key_env)
            if not key:
                raise EndpointError(f"endpoint.apiKeyEnv names {config.api_key_env}, which is not set in the "
                                    "environment", permanent=True)
            self.headers["Authorization"] = f"Bearer {key.strip()}"
        self.context = config.context_length or self._served_context()

    # --- The Scorer questions ----------------------------------------------------------------------------

    def rolling(self, docs: list[str], stride: int | None) -> list[tuple[float, int]]:
        """(sum of log p, tokens scored) per document."""
        plans = self._map(lambda doc: self._windows(doc, stride), docs)
        flat = [(i, text, begin) for i, windows in enumerate(plans) for text, begin in windows]
        sums = self._map(lambda w: self._region_sum(w[1], w[2]), flat)
        out = [(0.0, 0)] * len(docs)
        for (i, _, _), (ll, count) in zip(flat, sums, strict=True):
            out[i] = (out[i][0] + ll, out[i][1] + count)
        return out

    def loglikelihoods(self, requests: list[tuple[str, str]]) -> list[float]:
        """log p(continuation | context) per (context, continuation)."""
        return self._map(lambda r: self._continuation(*r), requests)

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completion of each prompt, up to its first newline."""
        def complete(prompt: str) -> str:
            body = {"model": self.config.model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0,
                    "stop": ["\n"]}
            return self._completion(body).choices[0].text
        return self._map(complete, prompts)

    # --- Scoring text ------------------------------------------------------------------------------------

    def score(self, prompt: str) -> ScoredText:
        """Every token of `prompt` with its log-probability, as the server tokenizes and scores it."""
        body = {"model": self.config.model, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1,
                "temperature": 0}
        choice = self._completion(body).choices[0]
        if choice.logprobs is None:
            raise EndpointError(f"{self.config.url}/completions returned no logprobs for echo: true, logprobs: 1; "
                                "the server cannot score text (it needs the legacy echo and logprobs fields)",
                                permanent=True)
        return scored_text(prompt, choice.logprobs)

    def _continuation(self, context: str, continuation: str) -> float:
        logprobs = self.score(context + continuation).region(len(context))
        if not logprobs or any(lp is None for lp in logprobs):
            raise EndpointError(f"the server scored no token of the continuation {continuation!r} after its "
                                f"context {context[-40:]!r}", permanent=True)
        return sum(lp for lp in logprobs if lp is not None)

    def _region_sum(self, text: str, begin: int) -> tuple[float, int]:
        """(sum, count) over the tokens of `text` from character `begin` that have a log-probability (a
        document's first token has none when nothing precedes it)."""
        scored = [lp for lp in self.score(text).region(begin) if lp is not None]
        return sum(scored), len(scored)

    def _windows(self, doc: str, stride: int | None) -> list[tuple[str, int]]:
        """(prompt text, where its scored region begins) for each window of `doc`."""
        prefix = self.config.document_prefix
        if self.context is None:
            return [(prefix + doc, len(prefix))]
        context = max(1, self.context - WINDOW_RESERVE)
        if len(prefix.encode("utf-8")) + len(doc.encode("utf-8")) <= context:
            return [(prefix + doc, len(prefix))]
        starts = self._token_starts(doc, context)
        windows = []
        for window in rolling_windows(starts + [len(doc)], word_starts(doc, starts), context, stride or context // 2):
            head = prefix if window.after_prefix else ""
            windows.append((head + doc[window.begin:window.end], len(head) + window.scored - window.begin))
        return windows

    def _token_starts(self, doc: str, budget: int) -> list[int]:
        """Where the server's tokens of `doc` start, learned from pieces short enough to surely fit."""
        return [begin + start for begin, end in text_pieces(doc, budget)
                for start in self.score(doc[begin:end]).starts if start >= 0]  # < 0: a start token it added

    # --- HTTP --------------------------------------------------------------------------------------------

    def _served_context(self) -> int | None:
        """The longest prompt the served model takes, from /v1/models; checks the model name (and the key) up
        front."""
        try:
            models = _Models.model_validate(self._request("GET", "/models"))
        except ValidationError as error:
            raise EndpointError(f"{self.config.url}/models is not an OpenAI model list: {error}",
                                permanent=True) from None
        served = {m.id: m for m in models.data}
        if self.config.model not in served:
            raise EndpointError(f"endpoint.model {self.config.model!r} is not served at {self.config.url}; it "
                                f"serves {', '.join(sorted(served)) or 'nothing'}", permanent=True)
        card = served[self.config.model]
        return card.max_prompt_tokens or card.max_model_len

    def _completion(self, body: dict[str, Any]) -> _Completion:
        answer = self._request("POST", "/completions", body)
        try:
            return _Completion.model_validate(answer)
        except ValidationError as error:
            raise EndpointError(f"{self.config.url}/completions answered something that is not a completion: "
                                f"{error}", permanent=True) from None

    def _request(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        """One API call, retried on 429, 5xx and network errors; other errors are permanent."""
        url = f"{self.config.url}{route}"
        data = json.dumps(body).encode() if body is not None else None
        backoff, last = FIRST_BACKOFF_SECONDS, ""
        for attempt in range(1, ATTEMPTS + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
            wait = backoff * random.uniform(0.5, 1.5)  # jittered, so clients retrying together spread out
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code != 429 and error.code < 500:
                    raise EndpointError(f"{method} {url} answered {error.code}: {message}", permanent=True) from None
                last = f"{error.code}: {message}"
                wait = _retry_after(error.headers) or wait
            except json.JSONDecodeError as error:
                raise EndpointError(f"{method} {url} answered something that is not JSON: {error}",
                                    permanent=True) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:  # timeouts included
                last = str(getattr(error, "reason", error))
            if attempt < ATTEMPTS:
                time.sleep(min(wait, MAX_BACKOFF_SECONDS))
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
        raise EndpointError(f"{method} {url} failed {ATTEMPTS} times; last: {last}", permanent=False)

    def _map(self, function: Callable[[T], R], items: list[T]) -> list[R]:
        """function(item) for every item, `concurrency` at a time, in order."""
        if len(items) <= 1 or self.config.concurrency == 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(min(self.config.concurrency, len(items))) as pool:
            return list(pool.map(function, items))


def _error_message(error: urllib.error.HTTPError) -> str:
    """The OpenAI-style error's message, else the body's start."""
    try:
        text = error.read().decode("utf-8", errors="replace")
    except OSError:
        return str(error.reason)
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:300] or str(error.reason)


def _retry_after(headers: Any) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None
