"""Continuous batching: one background loop admits waiting prompts and decodes every running sequence.

Each iteration (`Engine.step`):
1. retires aborted sequences (a client left, a stop string matched);
2. scores the prompts of waiting groups that asked for prompt log-probabilities (`echo` with `logprobs`);
   a group that asked for no new token (max_tokens 0) finishes there, without ever taking a slot;
3. admits waiting groups while slots are free (a group is one prompt and its `n` choices; the prompt is
   prefilled once and its cache copied to the other choices), emitting each choice's first token; with a
   prefix cache, the longest cached block prefix of a prompt is copied into its slot and only the rest is
   computed, and the prompt's blocks are cached for later prompts. A prompt longer than `prefill_tokens` is
   prefilled in chunks of that many tokens, one chunk per iteration in the last slot, so the running
   sequences still get a token every iteration (chunked prefill); it joins the batch after its last chunk;
4. runs one decode step for all running sequences and retires the finished ones at once, so a short request
   leaves the batch the token it ends and a new one joins on the next iteration.

Outputs go to `emit` (one call per phase with every sequence's new token), which the HTTP layer turns into
per-request queue items on its event loop; the engine knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .prefix_cache import PrefixIndex
from .protocol import FinishReason
from .runner import Runner, TokenScore, token_scores
from .sampling import SamplingParams, choose, generator_for

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    """One choice being generated."""

    prompt: list[int]
    params: SamplingParams
    index: int
    sink: Any = None
    """Where the caller wants this sequence's outputs; passed through untouched."""
    generator: torch.Generator = field(init=False)
    output: list[int] = field(default_factory=list)
    slot: int = -1
    length: int = 0
    """Tokens in the KV cache: the prompt and every output token but the newest."""
    finish_reason: str | None = None
    aborted: bool = False
    prompt_scores: list[TokenScore | None] | None = None
    """With params.prompt_logprobs: each prompt token's score (None for the first), set before any output."""

    def __post_init__(self) -> None:
        self.generator = generator_for(self.params.seed, self.index)


@dataclass(eq=False)
class Group:
    """A prompt and its n choices, admitted together so the prompt is computed once."""

    sequences: list[Sequence]

    @property
    def prompt(self) -> list[int]:
        return self.sequences[0].prompt

    @classmethod
    def of(cls, prompt: list[int], params: SamplingParams, n: int, sinks: Iterable[Any]) -> Group:
        return cls([Sequence(prompt, params, i, sink) for i, sink in zip(range(n), sinks, strict=True)])


@dataclass(frozen=True)
class StepOutput:
    sequence: Sequence
    token: int
    """The new token; -1 when the sequence ends without one (an error, or nothing asked for)."""
    finish_reason: str | None
    score: TokenScore | None = None
    """The new token's log-probability and alternatives, when params.logprobs asked for them."""


@dataclass(eq=False)
class Partial:
    """A group whose prompt is being prefilled in chunks: its first `done` tokens are cached."""

    group: Group
    done: int


class Engine:
    def __init__(self, runner: Runner, eos_ids: Iterable[int], emit: Callable[[list[StepOutput]], None],
                 prefill_tokens: int = 4096):
        self.runner = runner
        self.eos_ids = frozenset(eos_ids)
        self.emit = emit
        self.slots = runner.shape.slots
        self.max_len = runner.shape.max_len
        self.prefill_tokens = prefill_tokens
        """Prompt tokens (padding included) prefilled per iteration: bounds the pause of decoding. A longer
        prompt is prefilled a chunk of this many tokens per iteration."""
        self.partial: Partial | None = None
        """The group whose long prompt is being prefilled in chunks, in slot `slots - 1`; its choices' slots
        are held for it (running sequences never reach them)."""
        self.waiting: deque[Group] = deque()  # only the engine's thread touches it
        self.running: list[Sequence] = []  # running[i].slot == i
        self._inbox: deque[Group] = deque()  # other threads append; the engine pops (both atomic)
        self._waiting_sequences = 0
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.prefix = PrefixIndex(runner.prefix_blocks, runner.block_tokens) if runner.prefix_blocks else None
        self.prefix_query_tokens = 0
        """Prompt tokens of prefilled prompts (the prefix cache looked each one up)."""
        self.prefix_hit_tokens = 0
        """Of those, the tokens found in the prefix cache (copied, not computed)."""

    # --- Called from other threads -------------------------------------------------------------------

    def add(self, group: Group) -> None:
        if len(group.sequences) > self.slots:
            raise ValueError(f"{len(group.sequences)} choices exceed the {self.slots} batch slots")
        needed = len(group.prompt) + (1 if group.sequences[0].params.max_tokens else 0)
        if needed > self.max_len:
            raise ValueError(f"prompt of {len(group.prompt)} tokens leaves no room in a {self.max_len}-token slot")
        self._inbox.append(group)
        self._wake.set()

    def abort(self, sequence: Sequence) -> None:
        """Stop generating `sequence`; it emits nothing more."""
        sequence.aborted = True
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="llmops-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread:
            self._thread.join()

    @property
    def queued(self) -> int:
        return self._waiting_sequences + sum(len(g.sequences) for g in tuple(self._inbox))

    @property
    def cached_tokens(self) -> int:
        partial = self.partial
        return sum(s.length for s in list(self.running)) + (partial.done if partial else 0)

    # --- The loop -------------------------------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self._inbox or self.waiting or self.running or self.partial)

    def _loop(self) -> None:
        while not self._stopped:
            if not self.has_work():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self.step()
            except Exception:  # a failing step must not take the server down: fail what ran, go on
                log.exception("engine step failed; failing its sequences")
                failed = [StepOutput(s, -1, FinishReason.ERROR) for s in self.running]
                failed += [StepOutput(s, -1, FinishReason.ERROR) for g in self.waiting for s in g.sequences]
                for output in failed:
                    output.sequence.finish_reason = FinishReason.ERROR
                    output.sequence.slot = -1
                if self.partial is not None:
                    failed += [StepOutput(s, -1, FinishReason.ERROR) for s in self.partial.group.sequences]
                self.running.clear()
                self.waiting.clear()
                self.partial = None
                self._waiting_sequences = 0
                self.emit(failed)

    def step(self) -> None:
        while self._inbox:
            self.waiting.append(self._inbox.popleft())
        self._drop_aborted()
        scored = self._score_prompts()
        if scored:
            self.emit(scored)
        if self.partial is None:
            admitted = self._admit()
            if len(admitted) == 1 and len(admitted[0].prompt) > self.prefill_tokens:
                self._start_partial(admitted[0])
            elif admitted:
                self.emit(self._prefill(admitted))
        if self.partial is not None:
            joined = self._continue_partial()
            if joined:
                self.emit(joined)
        self._waiting_sequences = sum(len(g.sequences) for g in self.waiting)
        if self.running:
            self.emit(self._decode())

    def _drop_aborted(self) -> None:
        if any(all(s.aborted for s in g.sequences) for g in self.waiting):
            self.waiting = deque(g for g in self.waiting if not all(s.aborted for s in g.sequences))
        self._retire([s for s in self.running if s.aborted])
        if self.partial is not None and all(s.aborted for s in self.partial.group.sequences):
            self.partial = None

    def _score_prompts(self) -> list[StepOutput]:
        """Score the prompts of waiting groups that asked for it (as many as `prefill_tokens` allows, at least
        one group) and finish the groups that want no new token. Returns the finished sequences' outputs."""
        batch: list[Group] = []
        width = 0
        for group in (g for g in self.waiting if _wants_score(g)):
            width = max(width, len(group.prompt))
            if batch and width * (len(batch) + 1) > self.prefill_tokens:
                break
            batch.append(group)
        if batch:
            alternatives = max(g.sequences[0].params.prompt_logprobs or 0 for g in batch)
            for group, scores in zip(batch, self.runner.score([g.prompt for g in batch], alternatives),
                                     strict=True):
                wanted = group.sequences[0].params.prompt_logprobs or 0
                scores = [s if s is None else TokenScore(s.logprob, s.top[:wanted]) for s in scores]
                for sequence in group.sequences:
                    sequence.prompt_scores = scores
        done = [g for g in self.waiting if g.sequences[0].params.max_tokens == 0 and not _wants_score(g)]
        if not done:
            return []
        self.waiting = deque(g for g in self.waiting if g.sequences[0].params.max_tokens != 0 or _wants_score(g))
        outputs = []
        for sequence in (s for g in done for s in g.sequences):
            sequence.finish_reason = FinishReason.LENGTH
            outputs.append(StepOutput(sequence, -1, FinishReason.LENGTH))
        return outputs

    def _admit(self) -> list[Group]:
        admitted: list[Group] = []
        free, width = self.slots - len(self.running), 0
        while self.waiting:
            group = self.waiting[0]
            if _wants_score(group) or group.sequences[0].params.max_tokens == 0:
                break  # its prompt is scored first (a later iteration): no output precedes its prompt's scores
            next_width = max(width, len(group.prompt))
            # A prompt over the budget is admitted only alone (then prefilled in chunks). Its chunks run in the
            # last slot: free, since the running sequences fill at most slots - n while it is prefilled.
            if len(group.sequences) > free or (admitted and next_width * (len(admitted) + 1) > self.prefill_tokens):
                break
            self.waiting.popleft()
            admitted.append(group)
            free -= len(group.sequences)
            width = next_width
        return admitted

    def _prefill(self, groups: list[Group]) -> list[StepOutput]:
        first = len(self.running)
        hits = [self._cached_prefix(g.prompt) for g in groups]
        # Prompts without a cached prefix are prefilled as one batch in the first slots; those with one load it
        # into the next slots and compute the rest of their prompts as a second batch.
        order = sorted(range(len(groups)), key=lambda i: bool(hits[i]))
        groups, hits = [groups[i] for i in order], [hits[i] for i in order]
        cold = [g.prompt for g, hit in zip(groups, hits, strict=True) if not hit]
        parts = [self.runner.prefill(cold, first)] if cold else []
        warm = [row for row, hit in enumerate(hits) if hit]  # after the cold rows, so contiguous
        if warm:
            starts = [len(hits[row]) * self.runner.block_tokens for row in warm]
            for row in warm:
                self.runner.load_prefix(first + row, hits[row])
            rests = [groups[row].prompt[start:] for row, start in zip(warm, starts, strict=True)]
            parts.append(self.runner.prefill_after(rests, first + warm[0], starts))
        return self._join(groups, torch.cat(parts))

    def _start_partial(self, group: Group) -> None:
        slot = self.slots - 1
        hit = self._cached_prefix(group.prompt)
        self.runner.load_prefix(slot, hit)
        self.partial = Partial(group, len(hit) * self.runner.block_tokens)

    def _continue_partial(self) -> list[StepOutput]:
        """Prefill the next chunk of the partial prompt; after its last, the group joins the running batch."""
        partial, slot = self.partial, self.slots - 1
        prompt = partial.group.prompt
        end = min(len(prompt), partial.done + self.prefill_tokens)
        logits = self.runner.prefill_after([prompt[partial.done : end]], slot, [partial.done])
        partial.done = end
        if end < len(prompt):
            return []
        self.partial = None
        if slot != len(self.running):
            self.runner.move_slot(slot, len(self.running), len(prompt))
        return self._join([partial.group], logits)

    def _join(self, groups: list[Group], logits: torch.Tensor) -> list[StepOutput]:
        """The groups' prompts are cached in slots len(running), len(running)+1, ... and `logits` holds each
        prompt's last-token logits: their choices join the running batch with their first tokens."""
        first = len(self.running)
        for row, group in enumerate(groups):
            head = group.sequences[0]
            head.slot = first + row
            self.running.append(head)
            if self.prefix is not None:
                self.runner.store_prefix(head.slot, self.prefix.insert(group.prompt))
        rows: list[int] = list(range(len(groups)))
        for row, group in enumerate(groups):
            for sibling in group.sequences[1:]:  # n > 1: the choices share the prompt's cache
                sibling.slot = len(self.running)
                self.runner.move_slot(group.sequences[0].slot, sibling.slot, len(group.prompt))
                self.running.append(sibling)
                rows.append(row)
        new = self.running[first:]
        for sequence in new:
            sequence.length = len(sequence.prompt)
        logits = logits[rows]
        tokens = choose(logits, [s.params for s in new], [s.generator for s in new])
        return self._append(new, tokens, _scores(logits, new, tokens))

    def _cached_prefix(self, prompt: list[int]) -> list[int]:
        """Pool blocks of the prompt's longest cached prefix, leaving at least its last token to compute (its
        logits give the first output token)."""
        if self.prefix is None:
            return []
        blocks = self.prefix.lookup(prompt, len(prompt) - 1)
        self.prefix_query_tokens += len(prompt)
        self.prefix_hit_tokens += len(blocks) * self.runner.block_tokens
        return blocks

    def _decode(self) -> list[StepOutput]:
        running = self.running
        device = self.runner.device
        last = torch.tensor([s.output[-1] for s in running], device=device)
        positions = torch.tensor([s.length for s in running], device=device)
        logits = self.runner.decode(last, positions)
        for sequence in running:
            sequence.length += 1
        tokens = choose(logits, [s.params for s in running], [s.generator for s in running])
        return self._append(running, tokens, _scores(logits, running, tokens))

    def _append(self, sequences: list[Sequence], tokens: list[int],
                scores: list[TokenScore | None]) -> list[StepOutput]:
        outputs, finished = [], []
        for sequence, token, score in zip(sequences, tokens, scores, strict=True):
            if sequence.aborted:  # aborted while this step ran: its consumer is gone
                finished.append(sequence)
                continue
            sequence.output.append(token)
            reason = None
            if token in self.eos_ids and not sequence.params.ignore_eos:
                reason = FinishReason.STOP
            elif len(sequence.output) >= sequence.params.max_tokens or sequence.length >= self.max_len:
                reason = FinishReason.LENGTH
            if reason:
                sequence.finish_reason = reason
                finished.append(sequence)
            outputs.append(StepOutput(sequence, token, reason, score))
        self._retire(finished)
        return outputs

    def _retire(self, finished: list[Sequence]) -> None:
        # Highest slot first: the last running sequence, which fills each hole, is then never itself retired.
        for sequence in sorted(finished, key=lambda s: s.slot, reverse=True):
            hole, last = sequence.slot, len(self.running) - 1
            if hole != last:
                mover = self.running[last]
                self.runner.move_slot(last, hole, mover.length)
                mover.slot = hole
                self.running[hole] = mover
            self.running.pop()
            sequence.slot = -1


def _wants_score(group: Group) -> bool:
    """The group asked for its prompt's log-probabilities and has not got them yet."""
    head = group.sequences[0]
    return head.params.prompt_logprobs is not None and head.prompt_scores is None


def _scores(logits: torch.Tensor, sequences: list[Sequence], tokens: list[int]) -> list[TokenScore | None]:
    """The chosen tokens' scores for the sequences that asked for log-probabilities (None for the others)."""
    out: list[TokenScore | None] = [None] * len(sequences)
    asking = [i for i, s in enumerate(sequences) if s.params.logprobs is not None]
    if not asking:
        return out
    logprobs = torch.log_softmax(logits[asking].float(), dim=-1)
    chosen = torch.tensor([tokens[i] for i in asking], device=logits.device)
    alternatives = max(sequences[i].params.logprobs or 0 for i in asking)
    for i, score in zip(asking, token_scores(logprobs, chosen, alternatives), strict=True):
        out[i] = TokenScore(score.logprob, score.top[: sequences[i].params.logprobs])
    return out
