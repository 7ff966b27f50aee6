"""The prefix cache: a prompt sharing a cached prefix with an earlier one computes only the rest, and greedy
output stays equal to transformers' generate with and without a hit."""

from __future__ import annotations

import pytest
from transformers import LlamaForCausalLM

from llmops.trainer.serve.engine import Engine
from llmops.trainer.serve.prefix_cache import PrefixIndex, block_keys
from llmops.trainer.serve.runner import Runner
from tests.serve_engine_model import VOCAB, generate, reference, tiny_llama

BLOCK = 8


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama(context_length=128)


SYSTEM = [(7 * i + 3) % VOCAB for i in range(2 * BLOCK + 5)]  # 2 full blocks and 5 tokens


def test_block_keys_depend_on_the_whole_prefix() -> None:
    a, b = block_keys([1, 2, 3, 4, 5], 2), block_keys([9, 2, 3, 4], 2)
    assert len(a) == 2 and len(b) == 2  # full blocks only
    assert a[1] != b[1]  # same second block, different first: a different key


def test_lookup_finds_the_longest_cached_prefix_within_the_limit() -> None:
    index = PrefixIndex(blocks=8, block_tokens=4)
    assert index.lookup(list(range(12)), 12) == []
    filled = index.insert(list(range(10)))  # blocks 0-3 and 4-7; 8-9 is not a full block
    assert [number for number, _ in filled] == [0, 1]
    pool = [block for _, block in filled]
    assert index.lookup(list(range(20)), 20) == pool
    assert index.lookup(list(range(20)), 7) == pool[:1]  # the limit leaves tokens to compute
    assert index.lookup([0, 1, 2, 3, 99, 5, 6, 7], 8) == pool[:1]  # diverges in the second block
    assert index.insert(list(range(10))) == []  # nothing new to fill


def test_least_recently_used_blocks_are_evicted_first() -> None:
    index = PrefixIndex(blocks=2, block_tokens=2)
    index.insert([1, 1])
    index.insert([2, 2])
    index.lookup([1, 1, 0], 3)  # [1, 1] is now the most recently used
    index.insert([3, 3])
    assert index.lookup([1, 1, 0], 3) != [] and index.lookup([2, 2, 0], 3) == [] and len(index) == 2


def test_a_prompt_longer_than_the_pool_keeps_its_first_blocks() -> None:
    index = PrefixIndex(blocks=2, block_tokens=2)
    assert [number for number, _ in index.insert(list(range(8)))] == [0, 1]
    assert len(index.lookup(list(range(8)), 8)) == 2


def test_greedy_output_equals_generate_with_and_without_a_cache_hit(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=4, max_len=128, prefix_blocks=16, block_tokens=BLOCK), eos_ids=[1],
                    emit=lambda _: None)
    first = SYSTEM + [40, 41, 42]
    assert generate(engine, [first], 12) == [reference(model, first, 12)]
    assert engine.prefix_hit_tokens == 0
    # Later prompts share the system prompt: its two full blocks come from the cache, in one batch with a miss.
    later = [SYSTEM + [50, 51], SYSTEM + list(range(60, 75)), [5, 6, 7], SYSTEM[: 2 * BLOCK + 1]]
    outputs = generate(engine, later, 12)
    for prompt, output in zip(later, outputs, strict=True):
        assert output == reference(model, prompt, 12), f"prompt {prompt[-3:]}"
    assert engine.prefix_hit_tokens == 3 * 2 * BLOCK
    assert engine.prefix_query_tokens == len(first) + sum(len(p) for p in later)


def test_hits_of_different_lengths_are_computed_in_one_batch_and_equal(model: LlamaForCausalLM) -> None:
    runner = Runner(model, slots=4, max_len=128, prefix_blocks=16, block_tokens=BLOCK)
    engine = Engine(runner, eos_ids=[1], emit=lambda _: None)
    generate(engine, [SYSTEM + [40]], 4)
    batches: list[list[int]] = []
    prefill_after = runner.prefill_after
    runner.prefill_after = lambda prompts, slot, starts: batches.append(starts) or prefill_after(prompts, slot, starts)
    # One block cached, two blocks cached with a short rest, two with a long rest: one forward for the three.
    later = [SYSTEM[:BLOCK] + [90, 91, 92], SYSTEM + [50], SYSTEM + list(range(60, 80))]
    outputs = generate(engine, later, 12)
    for prompt, output in zip(later, outputs, strict=True):
        assert output == reference(model, prompt, 12), f"prompt {prompt[-3:]}"
    assert batches == [[BLOCK, 2 * BLOCK, 2 * BLOCK]]


def test_the_same_prompt_again_is_served_from_the_cache_and_equal(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=2, max_len=128, prefix_blocks=16, block_tokens=BLOCK), eos_ids=[1],
                    emit=lambda _: None)
    prompt = SYSTEM[: 2 * BLOCK]  # exactly two blocks: the second must be computed, for the last logits
    expected = reference(model, prompt, 10)
    assert generate(engine, [prompt], 10) == [expected]
    assert generate(engine, [prompt], 10) == [expected]
    assert engine.prefix_hit_tokens == BLOCK


def test_without_a_prefix_cache_nothing_is_looked_up(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=2, max_len=128), eos_ids=[1], emit=lambda _: None)
    prompt = SYSTEM + [9]
    assert generate(engine, [prompt], 6) == generate(engine, [prompt], 6) == [reference(model, prompt, 6)]
    assert engine.prefix is None and engine.prefix_query_tokens == 0
