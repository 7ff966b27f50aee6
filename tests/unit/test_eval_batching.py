"""Batched scoring for evaluation: requests packed across questions, a shared context computed once for all its
choices, and document windows packed across documents give the numbers of scoring each request on its own
(and of lm-evaluation-harness), in request order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llmops.trainer.evaluate import batching, scoring
from llmops.trainer.evaluate.run import LocalModel

VOCAB = 61
CONTEXT = 48


def tiny_llama(attention: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                         attn_implementation=attention)
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def alone(model: LlamaForCausalLM, context: list[int], continuation: list[int], max_length: int) -> float:
    """log p(continuation | context) from one forward pass over this request only, cut on the left to the
    model's length as lm-eval cuts it: the straightforward path the batched one must equal."""
    ids = (context + continuation)[-(max_length + 1):]
    logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids[:-1]])).logits[0], dim=-1)
    first = len(ids) - len(continuation)  # index in ids of the continuation's first token
    return sum(logprobs[first + k - 1, token].item() for k, token in enumerate(continuation))


def questions(rng: random.Random, count: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) requests: contexts of 1 to 30 tokens, each with 2 to 5 choices of 1 to 12 tokens."""
    requests = []
    for _ in range(count):
        context = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 30))]
        for _ in range(rng.randint(2, 5)):
            requests.append((context, [rng.randrange(VOCAB) for _ in range(rng.randint(1, 12))]))
    return requests


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("budget", [1, 64, 4096])
def test_batched_log_likelihoods_equal_each_request_scored_alone(attention: str, budget: int) -> None:
    model, rng = tiny_llama(attention), random.Random(budget)
    requests = questions(rng, 12)
    # Too long for the model: cut on the left, so it cannot share its context's row.
    long_context = [rng.randrange(VOCAB) for _ in range(CONTEXT)]
    requests += [(long_context, [1, 2, 3]), (long_context, [4])]
    rng.shuffle(requests)  # a question's choices need not be adjacent; results come back in request order
    got = scoring.loglikelihoods(model, requests, CONTEXT, budget)
    want = [alone(model, context, continuation, CONTEXT) for context, continuation in requests]
    assert got == pytest.approx(want, abs=1e-4)


def test_a_context_is_computed_once_for_all_its_choices() -> None:
    requests = [([5, 6, 7, 8], [1, 2]), ([9, 9], [3]), ([5, 6, 7, 8], [4, 5, 6]), ([5, 6, 7, 8], [7])]
    rows = batching.choice_rows(requests, CONTEXT)
    assert [(row.context, [i for i, _ in row.continuations]) for row in rows] == [((5, 6, 7, 8), [0, 2, 3]),
                                                                                  ((9, 9), [1])]
    # The context, then each choice without its last token (its prediction is never read).
    assert rows[0].length == 4 + 1 + 2 + 0


def test_an_empty_continuation_scores_zero_and_an_empty_context_is_refused() -> None:
    model = tiny_llama()
    assert scoring.loglikelihoods(model, [([3, 4], []), ([3, 4], [5])], CONTEXT)[0] == 0.0
    with pytest.raises(ValueError, match="context has no tokens"):
        scoring.loglikelihoods(model, [([], [5])], CONTEXT)


def test_batches_are_longest_first_within_the_budget_and_hold_every_row_once() -> None:
    lengths = [5, 30, 12, 12, 7, 40, 1]
    batches = batching.pack(lengths, 36)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(lengths, reverse=True)
    assert all(len(batch) * lengths[batch[0]] <= 36 for batch in batches if len(batch) > 1)
    assert batches[0] == [5]  # longer than the budget: alone


@pytest.mark.parametrize(("n", "context", "stride"), [(0, 16, 8), (10, 16, 8), (100, 16, 16), (100, 16, 5)])
def test_rolling_windows_score_every_token_once_within_the_context(n: int, context: int, stride: int) -> None:
    windows = batching.rolling_windows(n, context, stride)
    scored = [t for w in windows for t in range(w.end - w.scored, w.end)]
    assert scored == list(range(n))
    assert all(w.end - w.start <= context and w.scored <= w.end - w.start for w in windows)


@pytest.mark.parametrize("budget", [1, 100, 4096])
def test_batched_rolling_log_likelihoods_equal_window_by_window(budget: int) -> None:
    model, rng = tiny_llama(), random.Random(7)
    docs = [[rng.randrange(VOCAB) for _ in range(n)] for n in (0, 1, 5, CONTEXT - 1, CONTEXT, 3 * CONTEXT + 5)]
    for stride in (CONTEXT, CONTEXT // 3):
        got = scoring.rolling_loglikelihoods(model, docs, 0, CONTEXT, stride, budget)
        want = [scoring.rolling_loglikelihood(model, ids, 0, CONTEXT, stride) for ids in docs]
        assert [n for _, n in got] == [n for _, n in want] == [len(ids) for ids in docs]
        assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """Characters, plus tokens that merge across a context's end: "ab", " b" and "e:"."""
    chars = ["<eos>", *"abcdexyz :?"]
    vocab = {t: i for i, t in enumerate(chars + ["ab", " b", "e:"])}
    bpe = models.BPE(vocab=vocab, merges=[("a", "b"), (" ", "b"), ("e", ":")])
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(bpe), eos_token="<eos>")


def test_the_boundary_token_split_is_lm_evals() -> None:
    tokenizer = merging_tokenizer()
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    encode = lambda texts: [ids(t) for t in texts]  # noqa: E731
    # "xabc" is "x" "ab" "c" and "xa" is "x" "a": the continuation is the whole text's tokens past the
    # context's own two, so the token merged across the boundary ("ab") is in neither part.
    assert ids("xabc") == [ids("x")[0], ids("ab")[0], ids("c")[0]]
    # A context's trailing space moves to the continuation (" b" is one token). An empty context is the prefix.
    requests = [("xa", "bc"), ("xy ", "bc"), ("", "abc"), ("xa", "d")]
    assert batching.encode_pairs(encode, requests, 0) == [(ids("xa"), ids("c")), (ids("xy"), ids(" bc")),
                                                          ([0], ids("abc")), (ids("xa"), ids("d"))]


def test_local_model_log_likelihoods_equal_lm_evaluation_harness() -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    tokenizer = merging_tokenizer()
    model = tiny_llama()
    requests = [("xa", "bc"), ("xy ", "bc"), ("de", ":abe"), ("xa", "b"), ("yyy", " ab cd?"), ("de", ":a"),
                ("z" * (CONTEXT + 5), " de")]  # the last one is cut on the left
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3).loglikelihood(
        [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(requests)],
        disable_tqdm=True)
    ours = LocalModel(model, tokenizer, token_budget=64).loglikelihoods(requests)
    assert ours == pytest.approx([ll for ll, _ in theirs], abs=1e-4)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_quantized_model_as_the_evaluation_loads_it_scores_the_same_batched(scheme: str, tmp_path: Path) -> None:
    from llmops.trainer.compress.qlinear import QuantizedLinear
    from llmops.trainer.compress.quantize import quantize
    from llmops.trainer.config.finetune import QuantizeConfig
    from llmops.trainer.evaluate.run import load

    tiny_llama().save_pretrained(tmp_path / "base")
    merging_tokenizer().save_pretrained(tmp_path / "base")
    extra = {"groupSize": 32} if scheme == "int4" else {}
    quantize(tmp_path / "base", QuantizeConfig.model_validate({"scheme": scheme, **extra}), tmp_path / "q")
    model, _ = load(tmp_path / "q")  # with the served model's kernels
    assert any(isinstance(m, QuantizedLinear) for m in model.modules())
    requests = questions(random.Random(3), 6)
    got = scoring.loglikelihoods(model, requests, CONTEXT, 64)
    want = [alone(model, context, continuation, CONTEXT) for context, continuation in requests]
    assert got == pytest.approx(want, abs=1e-4)
