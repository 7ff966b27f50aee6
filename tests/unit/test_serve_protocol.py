"""Streaming detokenization with stop strings, and the strict request models of the HTTP API."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from llmops.trainer.serve.detokenize import TextStream
from llmops.trainer.serve.protocol import ChatRequest, CompletionRequest, validation_error

TEXT = "naïve café — 東京 façade: the quick brown fox, the lazy dog. " * 4


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


def pieces(tokenizer: PreTrainedTokenizerFast, ids: list[int], stop: list[str]) -> tuple[list[str], TextStream]:
    stream = TextStream(tokenizer, stop)
    out = [stream.push(token) for token in ids]
    out.append(stream.flush())
    return out, stream


def test_pieces_join_to_the_full_decode_even_inside_multibyte_characters(tokenizer: PreTrainedTokenizerFast) -> None:
    table = bytes_to_unicode()  # byte-level BPE's byte -> symbol map: one token per byte splits characters
    byte_ids = tokenizer.convert_tokens_to_ids([table[b] for b in "東京 café".encode()])
    ids = tokenizer("東京 café")["input_ids"]
    for sequence in (ids, byte_ids, tokenizer(TEXT)["input_ids"] + [0]):
        out, stream = pieces(tokenizer, sequence, [])
        assert "".join(out) == tokenizer.decode(sequence, skip_special_tokens=True)
        assert not any("\ufffd" in piece for piece in out[:-1])


def test_a_stop_string_across_tokens_ends_the_text_before_it(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer(TEXT)["input_ids"]
    out, stream = pieces(tokenizer, ids, ["lazy d", "zzz"])
    assert stream.stopped
    assert "".join(out) == TEXT[: TEXT.index("lazy d")]
    assert not any("lazy" in piece for piece in out)


def test_text_that_may_begin_a_stop_string_is_held_back_until_it_cannot(tokenizer: PreTrainedTokenizerFast) -> None:
    stream = TextStream(tokenizer, ["fox!"])
    shown = "".join(stream.push(token) for token in tokenizer("the quick brown fox")["input_ids"])
    assert shown == "the quick brown "[: len(shown)] and not shown.endswith("fox")
    shown += stream.flush()
    assert shown == "the quick brown fox" and not stream.stopped


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "prompt": "x", "top_p": 0}, "top_p"),
    ({"model": "m", "prompt": 5}, "prompt"),
    ({"model": "m"}, "prompt"),
    ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
    ({"model": "m", "prompt": "x", "logprobs": 6}, "logprobs"),  # OpenAI's legacy limit is 5
    ({"model": "m", "prompt": "x", "logprobs": True}, "logprobs"),  # the chat API's boolean
    ({"model": "m", "prompt": "x", "echo": True, "logprobs": 1, "stream": True}, "stream"),
    ({"model": "m", "prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
])
def test_completion_requests_are_checked_strictly(body: dict, param: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        CompletionRequest.model_validate(body)
    error = validation_error(caught.value)
    assert error.status == 400 and error.type == "invalid_request_error"
    assert (error.param or "").split(".")[0] == (param or "")
    assert error.body()["error"]["message"]


def test_neutral_values_of_unsupported_options_and_unknown_fields_pass() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2], "logprobs": None, "echo": False,
                                                "frequency_penalty": 0, "best_of": 1, "whatever": 1})
    assert request.prompts() == [[1, 2]] and request.max_tokens == 16
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "stop": "x"}).stops == ["x"]


def test_echo_with_max_tokens_0_scores_the_prompt_and_chat_refuses_echo_and_logprobs() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": True, "max_tokens": 0,
                                                "logprobs": 5})
    assert (request.echo, request.max_tokens, request.logprobs) == (True, 0, 5)
    for extra in ({"echo": True}, {"logprobs": True}, {"top_logprobs": 2}):
        with pytest.raises(ValidationError) as caught:
            ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
        error = validation_error(caught.value)
        assert error.status == 400 and error.param == next(iter(extra))
        assert "/v1/completions" in error.message


def test_chat_messages_take_text_parts_and_max_completion_tokens() -> None:
    request = ChatRequest.model_validate({"model": "m", "max_completion_tokens": 7, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert request.messages[0].text() == "ab" and request.max_new == 7
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "messages": []})
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})
