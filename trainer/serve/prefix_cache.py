"""Which prompt prefixes have their keys and values kept, block by block, for reuse by later prompts.

A prompt is cut into blocks of `block_tokens` tokens; a block's key is a hash chained over every token up to
its end, so a block is found only when the whole prefix before it matches too (keys and values at a position
depend on every token before it). The index maps keys to numbered blocks of a fixed pool (the Runner holds
their tensors) and evicts the least recently used block when the pool is full. Pure bookkeeping: no torch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

BLOCK_TOKENS = 16


def block_keys(prompt: Sequence[int], block_tokens: int) -> list[bytes]:
    """The keys of the prompt's full blocks, first block first; a key covers all tokens before its block's end."""
    keys: list[bytes] = []
    digest = b""
    for end in range(block_tokens, len(prompt) + 1, block_tokens):
        block = b"".join(t.to_bytes(4, "little") for t in prompt[end - block_tokens : end])
        digest = hashlib.blake2b(digest + block, digest_size=16).digest()
        keys.append(digest)
    return keys


class PrefixIndex:
    def __init__(self, blocks: int, block_tokens: int = BLOCK_TOKENS):
        if blocks < 1 or block_tokens < 1:
            raise ValueError("a prefix cache needs at least one block of at least one token")
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[bytes, int] = OrderedDict()  # key -> pool block, least recently used first
        self._free = list(range(blocks - 1, -1, -1))

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, prompt: Sequence[int], limit: int) -> list[int]:
        """Pool blocks holding the longest cached prefix of `prompt` of at most `limit` tokens, in order;
        marks them used."""
        found: list[int] = []
        for key in block_keys(prompt[: limit - limit % self.block_tokens], self.block_tokens):
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            found.append(block)
        return found

    def insert(self, prompt: Sequence[int]) -> list[tuple[int, int]]:
        """Make room for the prompt's full blocks not cached yet; returns (block number in the prompt, pool
        block) for each one the caller must now fill. Never evicts a block of this same prompt."""
        keys = block_keys(prompt, self.block_tokens)
        mine = set(keys)
        to_fill: list[tuple[int, int]] = []
        for number, key in enumerate(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            block = self._take(mine)
            if block is None:
                break  # the pool is smaller than this prompt: keep what fits (later blocks need earlier ones)
            self._blocks[key] = block
            to_fill.append((number, block))
        return to_fill

    def _take(self, keep: set[bytes]) -> int | None:
        if self._free:
            return self._free.pop()
        victim = next((key for key in self._blocks if key not in keep), None)
        if victim is None:
            return None
        return self._blocks.pop(victim)
