"""The continuous-batching engine against transformers' own generate, with requests joining and leaving."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import LlamaForCausalLM

from llmops.trainer.serve.engine import Engine, FinishReason, Group, StepOutput
from llmops.trainer.serve.runner import Runner, UnsupportedModel
from llmops.trainer.serve.sampling import SamplingParams, top_p_probabilities
from tests.serve_engine_model import greedy, reference, tiny_llama


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama(context_length=96)


class Collect:
    def __init__(self) -> None:
        self.outputs: list[StepOutput] = []

    def __call__(self, outputs: list[StepOutput]) -> None:
        self.outputs.extend(outputs)


def run_until_idle(engine: Engine, limit: int = 1000) -> None:
    for _ in range(limit):
        if not engine.has_work():
            return
        engine.step()
    raise AssertionError("engine did not finish")


def test_greedy_output_equals_generate_while_requests_join_and_leave(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=4, max_len=96), eos_ids=[1], emit=Collect())
    prompts = [[5, 6, 7], list(range(10, 40)), [42], list(range(50, 62)), [3, 9, 27, 81], list(range(60, 80))]
    lengths = [20, 5, 31, 12, 9, 17]
    groups = [Group.of(p, greedy(n), 1, [None]) for p, n in zip(prompts, lengths, strict=True)]
    engine.add(groups[0])
    engine.step()
    engine.step()  # the first request is mid-decode when the others arrive
    for group in groups[1:]:
        engine.add(group)
    engine.step()
    assert len(engine.running) == 4 and engine.queued == 2  # slots full: the rest wait
    run_until_idle(engine)
    for group, prompt, length in zip(groups, prompts, lengths, strict=True):
        sequence = group.sequences[0]
        assert sequence.output == reference(model, prompt, length), f"prompt {prompt[:3]}..."
        assert sequence.finish_reason == FinishReason.LENGTH
    assert engine.running == [] and engine.cached_tokens == 0


def test_end_of_sequence_finishes_a_sequence_and_its_slot_is_reused(model: LlamaForCausalLM) -> None:
    prompt = [5, 6, 7]
    free_run = reference(model, prompt, 12)
    eos = free_run[4]  # pretend the fifth greedy token ends the text
    engine = Engine(Runner(model, slots=1, max_len=96), eos_ids=[eos], emit=Collect())
    first = Group.of(prompt, SamplingParams(max_tokens=12, temperature=0.0), 1, [None])
    second = Group.of([8, 9], greedy(6), 1, [None])
    engine.add(first)
    engine.add(second)
    run_until_idle(engine)
    assert first.sequences[0].output == reference(model, prompt, 12, eos=eos)
    assert first.sequences[0].output[-1] == eos and first.sequences[0].finish_reason == FinishReason.STOP
    assert second.sequences[0].output == reference(model, [8, 9], 6)


def test_choices_share_the_prompt_and_seeded_sampling_ignores_the_batch(model: LlamaForCausalLM) -> None:
    def sample(seed: int, neighbours: int) -> list[list[int]]:
        engine = Engine(Runner(model, slots=8, max_len=96), eos_ids=[], emit=Collect())
        group = Group.of([4, 5, 6], SamplingParams(max_tokens=15, temperature=0.9, top_p=0.9, seed=seed), 3,
                         [None] * 3)
        for i in range(neighbours):
            engine.add(Group.of(list(range(20, 30 + 7 * i)), greedy(10 + i), 1, [None]))
        engine.add(group)
        run_until_idle(engine)
        return [s.output for s in group.sequences]

    alone, crowded = sample(seed=7, neighbours=0), sample(seed=7, neighbours=3)
    assert alone == crowded
    assert len({tuple(choice) for choice in alone}) == 3  # each choice draws its own stream
    assert sample(seed=8, neighbours=0) != alone


def test_aborted_sequences_leave_and_the_others_are_unaffected(model: LlamaForCausalLM) -> None:
    collect = Collect()
    engine = Engine(Runner(model, slots=3, max_len=96), eos_ids=[], emit=collect)
    groups = [Group.of([2 + i, 3, 4 + i], greedy(20), 1, [None]) for i in range(3)]
    for group in groups:
        engine.add(group)
    for _ in range(3):
        engine.step()
    engine.abort(groups[0].sequences[0])  # slot 0: the last slot's cache moves into the hole
    engine.step()
    assert len(engine.running) == 2
    emitted_after = [o for o in collect.outputs if o.sequence is groups[0].sequences[0]]
    run_until_idle(engine)
    assert [o for o in collect.outputs if o.sequence is groups[0].sequences[0]] == emitted_after
    for group in groups[1:]:
        assert group.sequences[0].output == reference(model, group.prompt, 20)


def test_a_sequence_stops_when_its_cache_slot_is_full(model: LlamaForCausalLM) -> None:
    engine = Engine(Runner(model, slots=1, max_len=16), eos_ids=[], emit=Collect())
    group = Group.of(list(range(10, 20)), greedy(100), 1, [None])
    engine.add(group)
    run_until_idle(engine)
    assert group.sequences[0].output == reference(model, list(range(10, 20)), 7)
    assert group.sequences[0].finish_reason == FinishReason.LENGTH
    with pytest.raises(ValueError, match="no room"):
        engine.add(Group.of(list(range(16)), greedy(1), 1, [None]))


def test_other_architectures_are_refused_by_name(model: LlamaForCausalLM) -> None:
    class Renamed:
        config = type("Config", (), {"model_type": "gpt2"})()

    with pytest.raises(UnsupportedModel, match="'gpt2'"):
        Runner(Renamed(), slots=1, max_len=8)  # type: ignore[arg-type]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.allclose(top_p_probabilities(logits, 1.0, 0.8), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(top_p_probabilities(logits, 1.0, 0.4), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(top_p_probabilities(logits, 1.0, 1.0), torch.tensor([0.5, 0.3, 0.15, 0.05]))


def test_a_failing_step_fails_its_sequences_and_the_loop_serves_on(model: LlamaForCausalLM) -> None:
    collect = Collect()
    runner = Runner(model, slots=2, max_len=96)
    engine = Engine(runner, eos_ids=[], emit=collect)
    real_decode, calls = runner.decode, []

    def decode_failing_once(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_decode(*args)

    runner.decode = decode_failing_once  # type: ignore[method-assign]
    engine.start()
    try:
        doomed = Group.of([5, 6, 7], greedy(10), 1, [None])
        engine.add(doomed)
        wait_for(lambda: any(o.finish_reason == FinishReason.ERROR for o in collect.outputs))
        assert engine.running == [] and doomed.sequences[0].finish_reason == FinishReason.ERROR
        healthy = Group.of([5, 6, 7], greedy(10), 1, [None])
        engine.add(healthy)
        wait_for(lambda: healthy.sequences[0].finish_reason is not None)
        assert healthy.sequences[0].output == reference(model, [5, 6, 7], 10)
    finally:
        engine.stop()


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
