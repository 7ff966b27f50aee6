"""The OpenAI-compatible wire format: request models (validated strictly) and OpenAI-style errors.

Unknown fields are ignored, as OpenAI-compatible servers do, except options we would silently get wrong
(penalties, tools, chat log probabilities...): those are rejected unless left at their neutral value.
Completions take the legacy `echo` and `logprobs` (0..5 alternatives), as OpenAI's legacy API and vLLM do:
with `echo: true, max_tokens: 0, logprobs: N` a client scores a text without generating, which is how
evaluation harnesses measure log-likelihoods over HTTP.
Extensions beyond OpenAI's fields: `ignore_eos` and `return_token_ids` (both as in vLLM).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError


class FinishReason:
    """Why a choice ended: OpenAI's `finish_reason` values, and `error` (ours) for a failed engine step."""

    STOP = "stop"  # an end-of-sequence token, or a stop string
    LENGTH = "length"  # max_tokens reached, or the sequence filled its cache slot
    ERROR = "error"  # the engine failed while this sequence ran


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(error: ValidationError) -> ApiError:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"] if param is None else f"{param}: {first['msg']}"
    # A rule over several fields has no location; it names the field it blames in its context.
    param = param or (first.get("ctx") or {}).get("param")
    return ApiError(400, message, param=param, code="invalid_value")


def _invalid(param: str, message: str) -> PydanticCustomError:
    """An error of a rule over several fields, blaming `param` (the 400's `param`)."""
    return PydanticCustomError("invalid_value", "{param}: {message}", {"param": param, "message": message})


_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "best_of": (None, 1), "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"),
}


class _Request(BaseModel):
    route: ClassVar[str] = "server"
    model_config = ConfigDict(strict=True, extra="ignore")
    unsupported: ClassVar[dict[str, tuple[Any, ...]]] = _NEUTRAL
    """Options this server does not implement, with the values that mean "off" (accepted)."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    ignore_eos: bool = False
    return_token_ids: bool = False

    @model_validator(mode="before")
    @classmethod
    def _reject_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, neutral in cls.unsupported.items():
                value = data.get(name)
                if value is not None and value not in neutral:
                    raise _invalid(name, f"not supported by this {cls.route}")
        return data

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class CompletionRequest(_Request):
    route: ClassVar[str] = "server"
    unsupported = {k: v for k, v in _NEUTRAL.items() if k not in ("echo", "logprobs")}
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for completions; 0 only with echo
    echo: bool = False
    """Return the prompt before the completion (its tokens' log-probabilities too, with logprobs)."""
    logprobs: int | None = Field(default=None, ge=0, le=5)
    """Log-probability of each returned token and of this many most likely alternatives (OpenAI's legacy
    limit is 5); None: no log-probabilities."""

    @model_validator(mode="after")
    def _scoring_combinations(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise _invalid("max_tokens", "0 generates nothing; it is allowed only with echo: true (to score the "
                                         "prompt)")
        if self.stream and (self.echo or self.logprobs is not None):
            raise _invalid("stream", "echo and logprobs are answered only without streaming (stream: false)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(_Request):
    route: ClassVar[str] = "server's chat completions (echo and logprobs are for /v1/completions)"
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def max_new(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


_Request.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()
