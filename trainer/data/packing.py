"""Tokenizer (train a byte-level BPE or load one) and packed token shards for the pretrain loader.

Shards are flat streams of token ids (numpy `tofile`, so `np.memmap` reads them back), each document
followed by the end-of-text token; `index.json` (llmops.trainer.config.manifest.ShardIndex) lists the shards
with their token counts and dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmops.trainer.config.data import TokenDtype, TokenizerConfig
from llmops.trainer.config.manifest import ShardEntry

ENCODE_BATCH = 512


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    """A byte-level BPE (GPT-2 style: no unknown tokens, any byte sequence round-trips)."""
    assert config.train is not None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.train.vocab_size,
        min_frequency=config.train.min_frequency,
        special_tokens=list(config.train.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(uri: str) -> Tokenizer:
    """A tokenizer.json, or a directory (e.g. a Hugging Face model) holding one."""
    path = Path(uri)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer.uri: no tokenizer.json at {uri}")
    return Tokenizer.from_file(str(path))


def end_of_text_id(tokenizer: Tokenizer, config: TokenizerConfig) -> int:
    """The document separator: the first special token of a trained tokenizer, else a known EOS."""
    candidates = list(config.train.special_tokens) if config.train else ["<|endoftext|>", "</s>", "<eos>"]
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError(f"the tokenizer has none of the end-of-text tokens {candidates}")


def token_dtype(vocab_size: int, wanted: TokenDtype) -> np.dtype:
    if wanted is TokenDtype.UINT16 or (wanted is TokenDtype.AUTO and vocab_size <= 1 << 16):
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def encode(tokenizer: Tokenizer, texts: Iterable[str], eos: int) -> Iterator[list[int]]:
    """Token ids of each text followed by the separator, encoded in batches (the Rust side is threaded)."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == ENCODE_BATCH:
            yield from (e.ids + [eos] for e in tokenizer.encode_batch(batch, add_special_tokens=False))
            batch = []
    if batch:
        yield from (e.ids + [eos] for e in tokenizer.encode_batch(batch, add_special_tokens=False))


def write_shards(directory: Path, prefix: str, documents: Iterable[list[int]], dtype: np.dtype,
                 shard_size: int) -> list[ShardEntry]:
    """Write `prefix-00000.bin`, ... of at most `shard_size` tokens; return their index entries.

    A shard is buffered as arrays of `dtype` (2 or 4 bytes a token, not a Python int's 8 to 36), so memory
    is bounded by the shard size whatever the corpus size."""
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[ShardEntry] = []
    pending: list[np.ndarray] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        name = f"{prefix}-{len(shards):05d}.bin"
        (np.concatenate(pending) if pending else np.zeros(0, dtype=dtype)).tofile(directory / name)
        shards.append(ShardEntry(file=name, tokens=pending_tokens))
        pending, pending_tokens = [], 0

    for ids in documents:
        tokens = np.asarray(ids, dtype=dtype)
        while pending_tokens + len(tokens) >= shard_size:
            take = shard_size - pending_tokens
            pending.append(tokens[:take])
            pending_tokens += take
            flush()
            tokens = tokens[take:]
        if len(tokens):
            pending.append(tokens)
            pending_tokens += len(tokens)
    if pending or not shards:
        flush()
    return shards


def read_shard(path: Path, dtype: str) -> np.ndarray:
    """Memory-map one shard whole, to inspect it (the pretrain loader reads windows: train/shards.py)."""
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")
