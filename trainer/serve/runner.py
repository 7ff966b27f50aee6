"""The model's forward pass over a slot-based static KV cache, for prefill and batched decode.

The cache holds one row ("slot") per running sequence: keys and values of shape
[layers, slots, kv_heads, max_len, head_dim]. Running sequences always occupy slots 0..B-1, so one decode
step attends to a view `cache[:, :B, :, :T]` without gathering; a retired sequence's hole is filled by moving
the last slot into it (one copy across all layers).

The forward pass uses the Hugging Face model's own weights and submodules (norms, rotary table, output and
down projections), with q/k/v and gate/up each fused into one matrix multiply and attention over the cache
our own; greedy output equals `model.generate` token for token (tested). Hugging Face's forward would
rebuild masks and cache objects every step, a large share of a small model's decode time.

With a prefix cache (`prefix_blocks` > 0) a pool of blocks of `block_tokens` positions keeps keys and values of
earlier prompts' prefixes: `load_prefix` copies blocks into a slot, `prefill_after` computes only the rest of
each prompt of a batch (attending to the copied prefixes; chunked prefill uses it too), and `store_prefix` copies
a slot's prompt blocks into the pool.

`score` runs the same forward over whole prompts without touching the cache, for the log-probabilities of
every prompt token (`echo` with `logprobs`: how clients score text without generating).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaRMSNorm

SUPPORTED_MODEL_TYPES = ("llama",)
SCORE_CHUNK = 512
"""Prompt positions whose vocabulary-wide log-probabilities are computed at once when scoring a prompt."""


@dataclass(frozen=True)
class TokenScore:
    """A token's log-probability under the model, and the most likely tokens at its position."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    """(token id, log-probability) of the most likely tokens, most likely first."""


def token_scores(logprobs: torch.Tensor, tokens: torch.Tensor, alternatives: int) -> list[TokenScore]:
    """Scores of `tokens[i]` under the log-probabilities `logprobs[i]` ([n, vocab]), with `alternatives` top
    tokens each: the raw model distribution, before temperature or top-p (as vLLM reports logprobs)."""
    chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
    if alternatives:
        values, ids = logprobs.topk(alternatives, dim=-1)
        tops = [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    else:
        tops = [()] * len(chosen)
    return [TokenScore(lp, top) for lp, top in zip(chosen, tops, strict=True)]


class UnsupportedModel(ValueError):
    """The model's architecture is not one the engine's forward pass implements."""


@dataclass(frozen=True)
class CacheShape:
    layers: int
    slots: int
    kv_heads: int
    max_len: int
    head_dim: int

    @property
    def tokens(self) -> int:
        return self.slots * self.max_len


class Runner:
    """Prefill and decode for a Llama-family model with a KV cache of `slots` x `max_len` tokens."""

    def __init__(self, model: PreTrainedModel, slots: int, max_len: int, prefix_blocks: int = 0,
                 block_tokens: int = 16):
        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModel(f"model_type {config.model_type!r} is not supported by the server's engine; "
                                   f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.decoder = model.model
        self.layers = list(self.decoder.layers)
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.layers[0].self_attn.scaling
        self.shape = CacheShape(len(self.layers), slots, self.kv_heads, max_len, self.head_dim)
        size = (len(self.layers), slots, self.kv_heads, max_len, self.head_dim)
        self.keys = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.values = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.prefix_blocks, self.block_tokens = prefix_blocks, block_tokens
        pool = (len(self.layers), prefix_blocks, self.kv_heads, block_tokens, self.head_dim)
        self.pool_keys = torch.zeros(pool, dtype=self.dtype, device=self.device)
        self.pool_values = torch.zeros(pool, dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            # The rotary module computes cos/sin per position elementwise, so a table computed once for every
            # position holds exactly the values it would compute per step. With dynamic NTK scaling the base
            # depends on the length asked for: the table is that of the longest context, for every prompt, as
            # vLLM serves such models (a plain transformers forward of a short prompt uses the unscaled base).
            positions = torch.arange(max_len, device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = self.decoder.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0], sin[0]  # [max_len, head_dim]
        self.fused = [self._fuse(layer) for layer in self.layers]
        norms = [self.decoder.norm] + [n for layer in self.layers for n in (layer.input_layernorm,
                                                                             layer.post_attention_layernorm)]
        # In float32 torch's rms_norm computes what LlamaRMSNorm does (it upcasts nothing), in one op of its
        # seven: a decode step of a small model is mostly per-op overhead. Other dtypes keep the module.
        self._fast_norm = self.dtype == torch.float32 and all(type(n) is LlamaRMSNorm for n in norms)

    def _fuse(self, layer) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One matrix for q/k/v and one for gate/up: half the matrix multiplies per layer. The original
        modules' weights become views into the fused ones, so no memory is spent twice."""
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = torch.cat([p.weight.data for p in projections])
        biases = [p.bias for p in projections]
        qkv_bias = torch.cat([b.data for b in biases]) if all(b is not None for b in biases) else None
        if any(b is not None for b in biases) and qkv_bias is None:
            raise UnsupportedModel("q/k/v projections where only some have a bias")
        if mlp.gate_proj.bias is not None or mlp.up_proj.bias is not None:
            raise UnsupportedModel("an MLP with biases")
        gate_up = torch.cat([mlp.gate_proj.weight.data, mlp.up_proj.weight.data])
        offset = 0
        for projection in projections:
            rows = projection.weight.shape[0]
            projection.weight.data = qkv[offset : offset + rows]
            if qkv_bias is not None:
                projection.bias.data = qkv_bias[offset : offset + rows]
            offset += rows
        rows = mlp.gate_proj.weight.shape[0]
        mlp.gate_proj.weight.data, mlp.up_proj.weight.data = gate_up[:rows], gate_up[rows:]
        return qkv, qkv_bias, gate_up

    def move_slot(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` cached positions of slot `source` into slot `target` (all layers)."""
        self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
        self.values[:, target, :, :length] = self.values[:, source, :, :length]

    def load_prefix(self, slot: int, blocks: list[int]) -> None:
        """Copy pool `blocks` into slot `slot` as its first len(blocks) * block_tokens positions."""
        if not blocks:
            return
        index = torch.tensor(blocks, device=self.device)
        length = len(blocks) * self.block_tokens
        for cache, pool in ((self.keys, self.pool_keys), (self.values, self.pool_values)):
            # [layers, n, kv_heads, block, dim] -> [layers, kv_heads, n * block, dim]
            cache[:, slot, :, :length] = pool[:, index].transpose(1, 2).flatten(2, 3)

    def store_prefix(self, slot: int, blocks: list[tuple[int, int]]) -> None:
        """Copy block `number` of slot `slot` (positions number*block_tokens on) into pool block `block`, for
        each (number, block)."""
        size = self.block_tokens
        for number, block in blocks:
            self.pool_keys[:, block] = self.keys[:, slot, :, number * size : (number + 1) * size]
            self.pool_values[:, block] = self.values[:, slot, :, number * size : (number + 1) * size]

    @torch.inference_mode()
    def prefill_after(self, prompts: list[list[int]], first_slot: int, starts: list[int]) -> torch.Tensor:
        """Run each `prompts[b]` at positions starts[b], starts[b]+1, ... of slot first_slot+b, whose first
        starts[b] positions are cached already (`load_prefix`), all in one batch; returns the logits of each
        prompt's last token, [len(prompts), vocab]."""
        ids = _right_padded(prompts)
        batch, width = ids.shape
        lengths, start = torch.tensor([len(p) for p in prompts]), torch.tensor(starts)
        offsets = torch.arange(width)
        positions = start[:, None] + offsets[None]  # [batch, width]
        valid = offsets[None] < lengths[:, None]  # right padding: computed, never cached nor read
        end = int((start + lengths).max())
        # Query (b, i) sees its slot's cached prefix and its own new tokens up to itself.
        mask = (torch.arange(end)[None, None] <= positions[:, :, None])[:, None].to(self.device)
        slots = (first_slot + torch.arange(batch))[:, None].expand(batch, width)[valid].to(self.device)
        columns = positions[valid].to(self.device)
        positions = positions.clamp(max=self.shape.max_len - 1).to(self.device)  # padding's rotary: any row
        cos, sin = self.cos[positions], self.sin[positions]
        rows = slice(first_slot, first_slot + batch)
        valid = valid.to(self.device)
        hidden = self.decoder.embed_tokens(ids.to(self.device))
        for index, layer in enumerate(self.layers):
            x = self._norm(layer.input_layernorm, hidden)
            q, k, v = self._qkv(index, x, cos, sin)
            self.keys[index][slots, :, columns] = k.transpose(1, 2)[valid]
            self.values[index][slots, :, columns] = v.transpose(1, 2)[valid]
            out = F.scaled_dot_product_attention(q, self.keys[index, rows, :, :end], self.values[index, rows, :, :end],
                                                 attn_mask=mask, scale=self.scale,
                                                 enable_gqa=self.kv_heads != self.heads)
            hidden = self._finish_layer(index, layer, hidden, out)
        return self._logits(self._last_tokens(hidden, prompts))

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], first_slot: int) -> torch.Tensor:
        """Run prompts (right-padded into one batch) and cache their keys and values in slots
        first_slot, first_slot+1, ...; returns the logits of each prompt's last token, [len(prompts), vocab]."""
        hidden = self._hidden(prompts, slice(first_slot, first_slot + len(prompts)))
        return self._logits(self._last_tokens(hidden, prompts))

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], alternatives: int) -> list[list[TokenScore | None]]:
        """Log-probability of every prompt token given the tokens before it (None for the first, which has no
        context) and the `alternatives` most likely tokens at each position: what `echo` with `logprobs`
        returns. Touches no cache slot, so it runs beside the sequences being decoded."""
        hidden = self._hidden(prompts, None)
        out = []
        for row, prompt in enumerate(prompts):
            scores: list[TokenScore | None] = [None]
            targets = torch.tensor(prompt[1:], device=self.device)
            # The vocabulary-wide log-softmax in pieces: a long prompt's full [length, vocab] would be large.
            for start in range(0, len(prompt) - 1, SCORE_CHUNK):
                logprobs = torch.log_softmax(self._logits(hidden[row, start : start + SCORE_CHUNK]), dim=-1)
                logprobs = logprobs[: len(prompt) - 1 - start]
                scores += token_scores(logprobs, targets[start : start + len(logprobs)], alternatives)
            out.append(scores)
        return out

    def _hidden(self, prompts: list[list[int]], rows: slice | None) -> torch.Tensor:
        """Hidden states after the last layer for right-padded prompts, [len(prompts), width, hidden]; with
        `rows`, the prompts' keys and values are cached in those slots."""
        ids = _right_padded(prompts).to(self.device)
        width = ids.shape[1]
        cos, sin = self.cos[None, :width], self.sin[None, :width]
        # Right padding needs no mask under causal attention: a real token never looks to its right.
        hidden = self.decoder.embed_tokens(ids)
        for index, layer in enumerate(self.layers):
            x = self._norm(layer.input_layernorm, hidden)
            q, k, v = self._qkv(index, x, cos, sin)
            if rows is not None:
                self.keys[index, rows, :, :width] = k
                self.values[index, rows, :, :width] = v
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                                 enable_gqa=self.kv_heads != self.heads)
            hidden = self._finish_layer(index, layer, hidden, out)
        return hidden

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One step for the sequences in slots 0..B-1: `tokens[b]` sits at `positions[b]` (its cached
        length); returns next-token logits [B, vocab]."""
        batch = tokens.shape[0]
        span = int(positions.max()) + 1
        rows = torch.arange(batch, device=self.device)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        # Each row sees its own cached positions and the new token, nothing of longer neighbours.
        mask = (torch.arange(span, device=self.device)[None] <= positions[:, None])[:, None, None]
        hidden = self.decoder.embed_tokens(tokens[:, None])
        group = self.heads // self.kv_heads
        for index, layer in enumerate(self.layers):
            x = self._norm(layer.input_layernorm, hidden)
            q, k, v = self._qkv(index, x, cos, sin)
            keys, values = self.keys[index], self.values[index]
            keys[rows, :, positions] = k[:, :, 0]
            values[rows, :, positions] = v[:, :, 0]
            # One query per row: plain batched matmuls over the cache beat the fused SDPA kernel here, and
            # grouped-query heads read their shared key/value head without copying it.
            q = q.view(batch, self.kv_heads, group, self.head_dim)
            scores = torch.matmul(q, keys[:batch, :, :span].transpose(-1, -2)) * self.scale
            scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            out = torch.matmul(scores, values[:batch, :, :span]).view(batch, self.heads, 1, self.head_dim)
            hidden = self._finish_layer(index, layer, hidden, out)
        return self._logits(hidden[:, -1])

    def _last_tokens(self, hidden: torch.Tensor, prompts: list[list[int]]) -> torch.Tensor:
        """Each right-padded row's hidden state at its prompt's last token, [len(prompts), hidden]."""
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        return hidden[torch.arange(len(prompts), device=self.device), last]

    def _qkv(self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        batch, length, _ = x.shape
        qkv, bias, _ = self.fused[index]
        heads = self.heads + 2 * self.kv_heads
        qkv = F.linear(x, qkv, bias).view(batch, length, heads, self.head_dim)
        # Rotary on q and k at once (the same elementwise formula as transformers' apply_rotary_pos_emb, so
        # the same values): half the ops of rotating each.
        qk = qkv[:, :, : self.heads + self.kv_heads]
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
        half = self.head_dim // 2
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        q = qk[:, :, : self.heads].transpose(1, 2)
        k = qk[:, :, self.heads :].transpose(1, 2)
        v = qkv[:, :, self.heads + self.kv_heads :].transpose(1, 2)
        return q, k, v

    def _norm(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self._fast_norm:
            return F.rms_norm(x, (x.shape[-1],), module.weight, module.variance_epsilon)
        return module(x)

    def _finish_layer(self, index: int, layer, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = out.shape
        hidden = hidden + layer.self_attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
        gate, up = F.linear(self._norm(layer.post_attention_layernorm, hidden), self.fused[index][2]).chunk(2, dim=-1)
        return hidden + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self._norm(self.decoder.norm, hidden)).float()


def _right_padded(prompts: list[list[int]]) -> torch.Tensor:
    """Token ids [len(prompts), longest], each prompt from column 0, zeros after it (on the CPU)."""
    ids = torch.zeros(len(prompts), max(len(p) for p in prompts), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt)
    return ids
