"""Lazy attention traces: one forward pass now, any layer's attention maps later.

A forward pass keeps only what is linear in the sequence length N: the residual stream entering
each decoder layer (``output_hidden_states``, references to tensors the pass computed anyway). A map
is produced on demand by running that layer's own ``input_layernorm`` and ``self_attn`` modules on
the stored input with a capture callback; the registered ``"lens"`` attention function hands the
callback the post-RoPE queries and keys and stops the module before it computes anything else.
So the queries and keys are exactly the model's own (no forked RoPE, qk-norm or projection code),
and nothing of size layers × heads × N × N ever exists.

Per-request behaviour (capture, λ override) travels as keyword arguments through transformers'
``**kwargs`` plumbing down to the attention function, so concurrent requests never share state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import budget

ATTENTION_IMPLEMENTATION = "lens"
ROW_CHUNK = 256  # query rows computed at once: bounds transient memory at ROW_CHUNK × N per head


class _Captured(Exception):
    """Raised by the capture callback to stop a layer once its queries and keys are recorded."""


@dataclass
class LambdaOverride:
    """Per-request replacement of DiffLlama's λ.

    Each attention call of a DiffLlama layer returns ``[B, N, H, d]`` for all H softmax heads; the
    layer then splits the heads in halves and computes ``out[:H/2] − λ·out[H/2:]``. Scaling the
    second half of both calls by ``λ'/λ`` therefore makes that ``A1·V − λ'·A2·V`` while every other
    number (λ_init, the GroupNorm scale) stays the model's own."""

    value: float  # λ' for every layer; 0.0 switches the subtraction off (only A1 drives the output)
    lambdas: list[float]  # the model's learned λ per layer, to form the ratio λ'/λ

    def apply(self, layer_idx: int, output: torch.Tensor) -> torch.Tensor:
        half = output.shape[2] // 2  # output: [B, N, H, d]; heads H/2.. hold the A2 maps
        scale = 0.0 if self.value == 0.0 else self.value / self.lambdas[layer_idx]
        return torch.cat([output[:, :, :half], output[:, :, half:] * scale], dim=2)


def lens_attention(module, query, key, value, attention_mask, lens_capture=None, lens_lambda=None, **kwargs):
    """SDPA, plus the two per-request hooks the trace engine needs. ``query`` [B, H, N, d] and ``key``
    [B, KV, N, d] arrive post-RoPE (and post qk-LayerNorm for Persimmon)."""
    if lens_capture is not None:
        lens_capture(query, key)
        raise _Captured
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if lens_lambda is not None:
        output = lens_lambda.apply(module.layer_idx, output)
    return output, weights


AttentionInterface.register(ATTENTION_IMPLEMENTATION, lens_attention)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)  # same masks as SDPA, padding included


def diff_lambdas(model) -> tuple[list[float], list[float]] | None:
    """λ and λ_init per layer, from the parameters exactly as ``DiffLlamaAttention.forward`` forms them."""
    layers = model.base_model.layers
    if not hasattr(layers[0].self_attn, "lambda_q1"):
        return None
    lambdas, inits = [], []
    with torch.no_grad():
        for layer in layers:
            attn = layer.self_attn
            lambda_1 = torch.exp(torch.sum(attn.lambda_q1 * attn.lambda_k1, dim=-1, dtype=torch.float32))
            lambda_2 = torch.exp(torch.sum(attn.lambda_q2 * attn.lambda_k2, dim=-1, dtype=torch.float32))
            lambdas.append(float(lambda_1 - lambda_2 + attn.lambda_init))
            inits.append(float(attn.lambda_init))
    return lambdas, inits


@dataclass
class Trace:
    """One forward pass over one sequence, from which any layer/head/kind of attention is computed
    on request. Token-aligned fields are lists of plain values; ``logits`` is the task head's output
    of the same pass (``[N, vocab]``, ``[N, labels]``, ``[labels]`` or ``[N, 2]`` for QA start/end)."""

    arch: str  # "diffllama" | "llama" | "persimmon"
    input_ids: list[int]
    tokens: list[str]  # readable token strings
    offsets: list[tuple[int, int]]  # char spans into the input (into text_pair where sequence_ids==1)
    sequence_ids: list[int | None]  # 0 text, 1 text_pair, None special token
    num_layers: int
    num_heads: int  # differential heads (H/2) for DiffLlama, softmax heads otherwise
    lambdas: list[float] | None
    lambda_inits: list[float] | None
    logits: torch.Tensor  # float32, CPU
    hidden_states: tuple[torch.Tensor, ...] = field(repr=False)  # L+1 × [N, D]: inputs of each layer, then final
    _model: torch.nn.Module = field(repr=False, default=None)
    truncated_from: int | None = None  # the input's token count when it was cut to the model's maximum

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("diff", "a1", "a2") if self.arch == "diffllama" else ("softmax",)

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)

    @property
    def nbytes(self) -> int:
        """Bytes this trace holds in tensors (linear in N by construction)."""
        return sum(t.numel() * t.element_size() for t in (self.logits, *self.hidden_states))

    def check(self, layer: int, head: int, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"kind {kind!r} is not available for {self.arch}; choose one of {', '.join(self.kinds)}")
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{self.num_layers - 1}")
        if not 0 <= head < self.num_heads:
            raise ValueError(f"head {head} is out of range: this model has heads 0..{self.num_heads - 1}")

    # --- queries and keys, recomputed by the model's own modules ------------------------------
    @torch.no_grad()
    def queries_keys(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-RoPE queries ``[H, N, d]`` and keys expanded to query heads ``[H, N, d]`` of a layer."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{self.num_layers - 1}")
        base = self._model.base_model
        decoder_layer = base.layers[layer]
        hidden = self.hidden_states[layer]  # [1, N, D]
        position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        captured = {}

        def capture(query, key):
            captured["q"], captured["k"] = query[0], key[0]

        try:
            decoder_layer.self_attn(
                hidden_states=decoder_layer.input_layernorm(hidden),
                position_embeddings=base.rotary_emb(hidden, position_ids=position_ids),
                attention_mask=None,
                position_ids=position_ids,
                lens_capture=capture,
            )
        except _Captured:
            pass
        query, key = captured["q"], captured["k"]
        groups = query.shape[0] // key.shape[0]  # GQA: query head h reads KV head h // groups
        return query, key.repeat_interleave(groups, dim=0)

    def _softmax_heads(self, head: int, kind: str) -> list[int]:
        half = self.num_heads  # DiffLlama: A1 of differential head i is head i, A2 is head i + H/2
        return {"softmax": [head], "a1": [head], "a2": [head + half], "diff": [head, head + half]}[kind]

    def logit_rows(self, layer: int, rows: torch.Tensor, heads: list[int], qk=None) -> torch.Tensor:
        """Scaled, causally masked pre-softmax logits ``[len(heads), len(rows), N]`` in float32
        for the query positions ``rows`` (a 1-D index tensor)."""
        query, key = qk if qk is not None else self.queries_keys(layer)
        scaling = self._model.base_model.layers[layer].self_attn.scaling
        rows = rows.to(query.device)
        q = query[heads][:, rows].float()  # [h, r, d]
        k = key[heads].float()  # [h, N, d]
        logits = torch.matmul(q, k.transpose(1, 2)) * scaling  # [h, r, N]
        future = torch.arange(k.shape[1], device=logits.device)[None, :] > rows[:, None]  # [r, N]
        return logits.masked_fill(future, float("-inf"))

    def rows(self, layer: int, head: int, kind: str, rows, qk=None) -> torch.Tensor:
        """Rows ``[r, N]`` (float32, CPU) of one map for the query positions ``rows``: the building
        block of every view, so no caller needs the whole map."""
        self.check(layer, head, kind)
        heads = self._softmax_heads(head, kind)
        probs = torch.softmax(self.logit_rows(layer, torch.as_tensor(rows), heads, qk), dim=-1)  # [h, r, N]
        if kind == "diff":
            return (probs[0] - self.lambdas[layer] * probs[1]).cpu()
        return probs[0].cpu()

    def row_chunks(self, layer: int, head: int, kind: str, qk=None, chunk: int = ROW_CHUNK) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The map of one head in blocks of query rows ``(row indices, [r, N] values)``, so callers
        never hold all N × N values. Pass ``qk=queries_keys(layer)`` when visiting several heads."""
        self.check(layer, head, kind)
        qk = qk if qk is not None else self.queries_keys(layer)
        for start in range(0, self.seq_len, chunk):
            rows = torch.arange(start, min(start + chunk, self.seq_len))
            yield rows, self.rows(layer, head, kind, rows, qk)

    def attention(self, layer: int, head: int, kind: str) -> torch.Tensor:
        """The full ``[N, N]`` map (float32, CPU) of one head: ``diff`` = A1 − λ·A2 for DiffLlama
        (what the model applies to V), ``a1``/``a2`` its two softmax maps, ``softmax`` otherwise."""
        budget.check(budget.map_bytes(self.seq_len, self.seq_len), f"the full {self.seq_len}×{self.seq_len} map",
                     "use the pooled map instead")
        return torch.cat([block for _, block in self.row_chunks(layer, head, kind)])

    def pooled(self, layer: int, head: int, kind: str, max_size: int = 512, qk=None) -> "PooledMap":
        """A display-sized map of at most ``max_size`` × ``max_size`` blocks (see ``PooledMap``)."""
        edges = block_edges(self.seq_len, max_size)
        sums = torch.zeros(len(edges) - 1, self.seq_len)
        block_of_row = torch.bucketize(torch.arange(self.seq_len), torch.tensor(edges[1:]), right=True)
        for rows, block in self.row_chunks(layer, head, kind, qk):
            sums.index_add_(0, block_of_row[rows], block)
        return PooledMap(values=pool_columns(sums, edges) / _block_sizes(edges)[:, None], edges=edges)


@dataclass
class PooledMap:
    """A display-sized map: ``values[i, j]`` is the attention mass the query tokens
    ``edges[i]:edges[i+1]`` give (on average) to the key tokens ``edges[j]:edges[j+1]`` — mean over
    query rows, sum over key columns, so rows keep their sums (1, or 1 − λ for ``diff``). Edges equal
    ``range(N + 1)`` when the map is not pooled."""

    values: torch.Tensor  # [B, B] float32
    edges: list[int]

    @property
    def is_pooled(self) -> bool:
        return len(self.edges) - 1 < self.edges[-1]


def block_edges(n: int, max_size: int) -> list[int]:
    """Boundaries of at most ``max_size`` near-equal contiguous blocks covering ``0..n``."""
    blocks = min(n, max_size)
    return [math.floor(i * n / blocks) for i in range(blocks + 1)]


def _block_sizes(edges: list[int]) -> torch.Tensor:
    return torch.tensor([b - a for a, b in zip(edges, edges[1:])], dtype=torch.float32)


def pool_columns(values: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """Sum ``values`` [r, N] over column blocks → [r, B]."""
    block_of_col = torch.bucketize(torch.arange(values.shape[1]), torch.tensor(edges[1:]), right=True)
    return torch.zeros(values.shape[0], len(edges) - 1).index_add_(1, block_of_col, values)


def run_trace(model, tokenizer, arch: str, text: str, text_pair: str | None = None) -> Trace:
    """Tokenise, run one forward pass with hidden states kept, and wrap it as a ``Trace``."""
    encoding = tokenizer([text], [text_pair] if text_pair is not None else None, return_offsets_mapping=True)
    return trace_encoding(model, tokenizer, arch, encoding, 0)


def trace_encoding(model, tokenizer, arch: str, encoding, index: int) -> Trace:
    """Trace sequence ``index`` of a batched tokenizer encoding (several when a long input was windowed)."""
    ids = encoding["input_ids"][index]
    special = set(tokenizer.all_special_ids)
    sequence_ids = [None if i in special else s for i, s in zip(ids, encoding.sequence_ids(index))]
    offsets = [(0, 0) if s is None else tuple(o) for s, o in zip(sequence_ids, encoding["offset_mapping"][index])]
    limit = model.config.max_position_embeddings
    if len(ids) <= limit:
        return trace_ids(model, tokenizer, arch, ids, offsets, sequence_ids)
    # beyond its trained positions a model's maps mean little: keep the first `limit` tokens, say so
    trace = trace_ids(model, tokenizer, arch, ids[:limit], offsets[:limit], sequence_ids[:limit])
    trace.truncated_from = len(ids)
    return trace


def decoded_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (special tokens (0, 0))."""
    special = set(tokenizer.all_special_ids)
    text, offsets = "", []
    for k, token_id in enumerate(ids):
        if token_id in special:
            offsets.append((0, 0))
            continue
        # decode the prefix, not the token: byte-level pieces of one character only decode together
        upto = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        offsets.append((len(text), len(upto)))
        text = upto
    return text, offsets


@torch.no_grad()
def trace_ids(model, tokenizer, arch: str, ids: list[int], offsets, sequence_ids) -> Trace:
    """One forward pass over ``ids`` with hidden states kept, wrapped as a ``Trace``."""
    budget.check(budget.forward_bytes(model, len(ids)), f"a trace of {len(ids)} tokens", "shorten the input")
    output = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True)
    config = model.config
    lambdas = diff_lambdas(model)
    heads = config.num_attention_heads
    return Trace(
        arch=arch,
        input_ids=ids,
        tokens=[tokenizer.decode([i]) for i in ids],
        offsets=offsets,
        sequence_ids=sequence_ids,
        num_layers=config.num_hidden_layers,
        num_heads=heads // 2 if lambdas else heads,
        lambdas=lambdas[0] if lambdas else None,
        lambda_inits=lambdas[1] if lambdas else None,
        logits=task_logits(output),
        hidden_states=output.hidden_states,
        _model=model,
    )


def task_logits(output) -> torch.Tensor:
    if hasattr(output, "start_logits"):  # question answering: [N, 2] (start, end)
        return torch.stack([output.start_logits[0], output.end_logits[0]], dim=-1).float().cpu()
    return output.logits[0].float().cpu()
