"""Chunked prefill: a prompt longer than the engine's prefill budget is computed a chunk per iteration, the
running sequences get a token every iteration meanwhile, and greedy output stays equal to generate."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import LlamaForCausalLM

from llmops.trainer.serve.engine import Engine, Group, StepOutput
from llmops.trainer.serve.runner import Runner
from tests.serve_engine_model import generate, greedy, reference, tiny_llama

BUDGET = 8
LONG = [(5 * i + 2) % 90 + 3 for i in range(5 * BUDGET - 3)]  # 37 tokens: five chunks


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama(context_length=96)


class PerStep:
    """The outputs of each `step` call, one list per step."""

    def __init__(self) -> None:
        self.steps: list[list[StepOutput]] = [[]]

    def __call__(self, outputs: list[StepOutput]) -> None:
        self.steps[-1].extend(outputs)

    def step(self, engine: Engine) -> list[StepOutput]:
        engine.step()
        self.steps.append([])
        return self.steps[-2]


def test_running_sequences_get_a_token_every_iteration_while_a_long_prompt_is_prefilled(
        model: LlamaForCausalLM) -> None:
    emitted = PerStep()
    engine = Engine(Runner(model, slots=3, max_len=96), eos_ids=[1], emit=emitted, prefill_tokens=BUDGET)
    short = Group.of([5, 6, 7], greedy(30), 1, [None])
    engine.add(short)
    emitted.step(engine)
    long = Group.of(LONG, greedy(10), 1, [None])
    engine.add(long)
    for chunk in range(5):
        outputs = emitted.step(engine)
        assert [o.sequence for o in outputs if o.sequence is short.sequences[0]] == [short.sequences[0]]
        first_token = [o for o in outputs if o.sequence is long.sequences[0]]
        assert bool(first_token) == (chunk == 4), f"chunk {chunk}"  # the first token comes with the last chunk
    while engine.has_work():
        engine.step()
    assert short.sequences[0].output == reference(model, [5, 6, 7], 30)
    assert long.sequences[0].output == reference(model, LONG, 10)
    assert engine.partial is None and engine.running == []


def test_a_long_prompt_equals_generate_with_a_prefix_cache_hit_and_several_choices(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=4, max_len=96, prefix_blocks=8, block_tokens=4), eos_ids=[1],
                    emit=lambda _: None, prefill_tokens=BUDGET)
    assert generate(engine, [LONG], 6) == [reference(model, LONG, 6)]
    again = LONG[:20] + [9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 3, 4, 5]  # the first 20 tokens (5 blocks) are cached
    hits = engine.prefix_hit_tokens
    group = Group.of(again, greedy(6), 2, [None, None])
    engine.add(group)
    while engine.has_work():
        engine.step()
    assert engine.prefix_hit_tokens == hits + 20
    assert [s.output for s in group.sequences] == [reference(model, again, 6)] * 2


def test_aborting_a_prompt_mid_prefill_frees_its_slots(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=2, max_len=96), eos_ids=[1], emit=lambda _: None, prefill_tokens=BUDGET)
    long = Group.of(LONG, greedy(5), 1, [None])
    engine.add(long)
    engine.step()
    engine.step()
    assert engine.partial is not None and engine.cached_tokens == 2 * BUDGET
    engine.abort(long.sequences[0])
    engine.step()
    assert engine.partial is None and not engine.has_work()
    assert generate(engine, [[4, 5], LONG], 5) == [reference(model, [4, 5], 5), reference(model, LONG, 5)]


def test_the_readme_states_the_servers_chunk_and_prefix_cache_sizes() -> None:
    from llmops.trainer.serve.server import PREFILL_CHUNK_TOKENS, PREFIX_BLOCK_TOKENS, PREFIX_CACHE_SHARE

    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert f"an iteration prefills at most {PREFILL_CHUNK_TOKENS} prompt tokens" in readme
    assert PREFIX_CACHE_SHARE == 0.25 and f"a pool of {PREFIX_BLOCK_TOKENS}-token blocks (a quarter of" in readme
