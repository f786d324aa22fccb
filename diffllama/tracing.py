"""Lazy attention traces: one forward pass now, any layer's attention maps later.

A forward pass keeps only what is linear in the sequence length N: the residual stream entering
each decoder layer (``output_hidden_states``, references to tensors the pass computed anyway). A map
is produced on demand by running that layer's own ``input_layernorm`` and ``self_attn`` modules on
the stored input with a capture callback; the registered ``"lens"`` attention function hands the
callback the post-RoPE queries and keys and stops the module before it computes anything else.
So the queries and keys are exactly the model's own (no forked RoPE, qk-norm or projection code),
and nothing of size layers × heads × N × N ever exists.

Per-request capture travels as a keyword argument through transformers' ``**kwargs`` plumbing down
to the attention function; interventions (λ override, head and residual edits) through the
``INTERVENTION`` context variable; so concurrent requests never share state.
"""

from __future__ import annotations

import contextvars
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import budget
from .records import VALUES, ContributionMap

ATTENTION_IMPLEMENTATION = "lens"
OVERVIEW_LOGITS = 1 << 28  # an overview beyond this many logits averages over a sample of rows
BLOCK_ROWS = 64  # query rows a block of logits aims for (fewer heads per block instead)


class _Captured(Exception):
    """Raised by the capture callback to stop a layer once its queries and keys are recorded."""


@dataclass(frozen=True)
class LambdaOverride:
    """Per-request replacement of DiffLlama's λ, layer by layer.

    Each attention call of a DiffLlama layer returns ``[B, N, H, d]`` for all H softmax heads; the
    layer then splits the heads in halves and computes ``out[:H/2] − λ·out[H/2:]``. Scaling the
    second half of both calls by ``λ'/λ`` therefore makes that ``A1·V − λ'·A2·V`` while every other
    number (λ_init, the GroupNorm scale) stays the model's own."""

    values: dict[int, float]  # layer -> λ' (any real number; 0.0 switches the subtraction off); other layers keep λ
    lambdas: list[float]  # the model's learned λ per layer, to form the ratio λ'/λ

    def apply(self, layer_idx: int, output: torch.Tensor) -> torch.Tensor:
        if layer_idx not in self.values:
            return output
        value = self.values[layer_idx]
        half = output.shape[2] // 2  # output: [B, N, H, d]; heads H/2.. hold the A2 maps
        scale = 0.0 if value == 0.0 else value / self.lambdas[layer_idx]
        return torch.cat([output[:, :, :half], output[:, :, half:] * scale], dim=2)


# The intervention of the request running in this context (``diffllama.interventions``), or None. A
# ContextVar, not a keyword argument: the head outputs and residual streams an intervention edits are
# only reachable through module hooks (an output projection's input, a decoder layer's input), which
# the forward call's kwargs never reach; a ContextVar reaches the attention function and those hooks
# alike, and each request's value is its own (a thread or a copied context sees only the value set in it).
INTERVENTION: contextvars.ContextVar = contextvars.ContextVar("lens_intervention", default=None)


def lens_attention(module, query, key, value, attention_mask, lens_capture=None, **kwargs):
    """SDPA, plus the per-request hooks of the trace engine and of interventions. ``query`` [B, H, N, d]
    and ``key`` [B, KV, N, d] arrive post-RoPE (and post qk-LayerNorm for Persimmon), ``value`` [B, KV, N, d]
    as the layer hands it over. ``lens_capture(query, key, value)`` returns True once it has what it needs
    and stops the layer; False lets the layer go on to its next attention call (DiffLlama makes two),
    with zeros as this call's output, since nothing after the capture is used. The active intervention's
    ``LambdaOverride`` (``INTERVENTION``), if any, rescales the A2 half of the output."""
    if lens_capture is not None:
        if lens_capture(query, key, value):
            raise _Captured
        batch, heads, n, _ = query.shape
        return query.new_zeros(batch, n, heads, value.shape[-1]), None  # SDPA's output layout [B, N, H, d]
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    intervention = INTERVENTION.get()
    if intervention is not None and intervention.lambdas is not None:
        output = intervention.lambdas.apply(module.layer_idx, output)
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


class LayerCache:
    """A trace's memo of what several views read from one layer (its queries and keys, pooled
    softmax maps), bounded in bytes and freed with the trace.

    When full, the most recently stored other entry makes room: a scan over every layer then keeps
    its first layers for the next scan (least-recently-used would evict each one just before it is
    needed again), and the layer a visitor is looking at stays until another one is stored. Traces
    are read from several threads: ``get`` computes a missing entry once, in the first thread that asks."""

    def __init__(self, max_bytes: float):
        self.max_bytes = max_bytes
        self._entries: dict[tuple, tuple[object, int]] = {}  # insertion-ordered: last stored last
        self._computing: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def __reduce__(self):  # a copied or pickled trace starts with an empty cache of the same bound
        return LayerCache, (self.max_bytes,)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def lookup(self, key: tuple):
        """The entry's value, or None."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[0] if entry else None

    def store(self, key: tuple, value, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.max_bytes:
                return
            while sum(size for _, size in self._entries.values()) + nbytes > self.max_bytes:
                self._entries.pop(next(reversed(self._entries)))
            self._entries[key] = (value, nbytes)

    def get(self, key: tuple, compute: Callable[[], object], size: Callable[[object], int]):
        value = self.lookup(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:  # threads asking for the same entry wait for the first one's result
            try:
                value = self.lookup(key)
                if value is None:
                    value = compute()
                    self.store(key, value, size(value))
                return value
            finally:
                with self._lock:
                    self._computing.pop(key, None)


def _tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Trace:
    """One forward pass over one sequence, from which any layer/head/kind of attention is computed
    on request. Token-aligned fields are lists of plain values; ``logits`` is the task head's output
    of the same pass (``[N, vocab]``, ``[N, labels]``, ``[labels]`` or ``[N, 2]`` for QA start/end).

    Every map is built from ``Block`` s of a few heads × query rows × keys (``map_blocks``), sized to
    stay in the CPU's cache; a layer's queries and keys are computed once and kept in the trace's
    ``cache`` (bounded: ``budget.qk_cache_bytes``), shared by every head and view that reads the layer."""

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
    hidden_states: tuple[torch.Tensor, ...] = field(repr=False)  # L+1 × [N, D]: inputs of each layer, then the last one's output (before the final norm)
    _model: torch.nn.Module = field(repr=False, default=None)
    truncated_from: int | None = None  # the input's token count when it was cut to the model's maximum
    cache: LayerCache = field(repr=False, default=None)

    def __post_init__(self):
        if self.cache is None:  # every layer's queries and keys when the budget allows, and room for pooled maps
            self.cache = LayerCache(1.25 * min(budget.qk_cache_bytes(), self.num_layers * self._qk_bytes()))

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("diff", "a1", "a2") if self.arch == "diffllama" else ("softmax",)

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)

    @property
    def device(self) -> torch.device:
        """Where the maps are computed: the model's device."""
        return self.hidden_states[0].device

    @property
    def nbytes(self) -> int:
        """Bytes this trace may hold in tensors: the pass's own (linear in N by construction) plus
        its cache's bound (also linear in N: at most every layer's queries and keys)."""
        return _tensor_bytes(self.logits, *self.hidden_states) + int(self.cache.max_bytes)

    def check(self, layer: int, head: int, kind: str) -> None:
        self._check_kind(kind)
        self._check_layer(layer)
        if not 0 <= head < self.num_heads:
            raise ValueError(f"head {head} is out of range: this model has heads 0..{self.num_heads - 1}")

    def _check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"kind {kind!r} is not available for {self.arch}; choose one of {', '.join(self.kinds)}")

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{self.num_layers - 1}")

    # --- queries and keys, recomputed by the model's own modules ------------------------------
    def _qk_bytes(self) -> int:
        """Bytes of one layer's cached queries and keys (float32)."""
        config = self._model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return (heads + kv_heads) * head_dim * self.seq_len * 4

    @torch.no_grad()
    def _run_attention(self, layer: int, capture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], bool]) -> None:
        """Run a layer's own ``input_layernorm`` and ``self_attn`` on its stored input until ``capture``
        (see ``lens_attention``) has what it needs."""
        base = self._model.base_model
        decoder_layer = base.layers[layer]
        hidden = self.hidden_states[layer]  # [1, N, D]
        position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
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

    def _compute_qk(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        captured = {}

        def capture(query, key, value):
            captured["q"], captured["k"] = query[0], key[0]
            return True

        self._run_attention(layer, capture)
        # keys transposed once here, so every block's logits are one plain matrix product
        return captured["q"].float().contiguous(), captured["k"].float().transpose(1, 2).contiguous()  # [H, N, d], [KV, d, N]

    def _qk(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-RoPE queries ``[H, N, d]`` and transposed keys ``[KV, d, N]`` (float32) of a layer,
        computed once per trace while the cache holds them."""
        self._check_layer(layer)
        return self.cache.get(("qk", layer), lambda: self._compute_qk(layer), lambda qk: _tensor_bytes(*qk))

    def _compute_values(self, layer: int) -> torch.Tensor:
        calls = []

        def capture(query, key, value):
            calls.append(value[0])  # [KV, N, d]
            return len(calls) == (2 if self.arch == "diffllama" else 1)

        self._run_attention(layer, capture)
        return torch.cat(calls, dim=-1).float().contiguous()  # [KV, N, w]

    def _values(self, layer: int) -> torch.Tensor:
        """Value vectors ``[KV, N, w]`` (float32) of a layer, as the layer hands them to its attention
        function, computed once per trace while the cache holds them. DiffLlama calls that function
        twice, with V's two halves of KV heads (each repeated over both halves), and concatenates the
        outputs along the last axis: so KV head g's value vector is both calls' vectors side by side,
        w = 2·head_dim. Otherwise w = head_dim."""
        self._check_layer(layer)
        return self.cache.get(("v", layer), lambda: self._compute_values(layer), _tensor_bytes)

    def _softmax_heads(self, heads: list[int], kind: str) -> list[int]:
        """The softmax heads behind differential/softmax heads ``heads``: DiffLlama's A1 of
        differential head i is head i, its A2 head i + H/2; for ``diff`` in pairs (A1, A2) per head."""
        half = self.num_heads
        if kind == "diff":
            return [h + offset for h in heads for offset in (0, half)]
        return [h + half for h in heads] if kind == "a2" else list(heads)

    def _logit_blocks(self, layer: int, heads: list[int], rows: list[int], unit: int = 1) -> Iterator["Block"]:
        """Scaled, causally masked pre-softmax logits of softmax heads ``heads`` for the query
        positions ``rows`` (ascending), in blocks of a few heads (whole groups of ``unit``) × rows × keys
        0..e-1, e the block's last position + 1: every later key is in the future of every row, so it
        is left out rather than computed and masked. A block holds about ``block_values`` numbers, so
        that the work on it stays in the CPU's cache, with at least ``BLOCK_ROWS`` rows where it can
        (a matrix product of a few rows runs far below the machine's speed)."""
        query, keys_t = self._qk(layer)
        scaling = self._model.base_model.layers[layer].self_attn.scaling
        groups = query.shape[0] // keys_t.shape[0]  # GQA: query head h reads KV head h // groups
        limit = block_values(query.device)
        width = max(unit, limit // (BLOCK_ROWS * (rows[-1] + 1)) // unit * unit) if rows else unit
        positions = torch.tensor(rows, device=query.device)
        for first_head in range(0, len(heads), width):
            group = heads[first_head:first_head + width]
            start = 0
            while start < len(rows):
                count = max(1, min(len(rows) - start, limit // (len(group) * (rows[start] + 1))))
                while count > 1 and len(group) * count * (rows[start + count - 1] + 1) > limit:
                    count = max(1, limit // (len(group) * (rows[start + count - 1] + 1)))
                block = positions[start:start + count]
                first, end = rows[start], rows[start + count - 1] + 1
                logits = torch.empty(len(group), count, end, device=query.device)
                for i, head in enumerate(group):
                    q = query[head, first:end] if end - first == count else query[head, block]  # [r, d]
                    torch.mm(q, keys_t[head // groups, :, :end], out=logits[i])  # [r, e]
                logits.mul_(scaling)
                if end - first > 1:  # keys after a row's own position: only among the block's later columns
                    future = torch.arange(first + 1, end, device=logits.device)[None, :] > block[:, None]  # [r, e - first - 1]
                    logits[:, :, first + 1:].masked_fill_(future, float("-inf"))
                yield Block(slice(first_head, first_head + len(group)), slice(start, start + count), block, logits)
                start += count

    def _rows(self, rows) -> list[int]:
        """Query positions as an ascending list (all of them by default)."""
        positions = range(self.seq_len) if rows is None else sorted(int(r) for r in torch.as_tensor(rows).reshape(-1))
        if positions and not 0 <= positions[0] <= positions[-1] < self.seq_len:
            raise ValueError(f"token positions must lie in 0..{self.seq_len - 1}")
        return list(positions)

    @torch.no_grad()
    def map_blocks(self, layer: int, kind: str, heads: list[int] | None = None, rows=None,
                   softmax: Callable[["Block"], None] | None = None) -> Iterator["Block"]:
        """The maps of ``kind`` for differential/softmax heads ``heads`` (all by default) at the query
        positions ``rows`` (all by default), as ``Block`` s of a few heads × rows × keys 0..e-1 (later
        keys are zero in every row). The building block of every view: no caller holds a whole map.
        So that a caller reading the softmax maps too needs no second pass, ``softmax``, if given, is
        handed each block of them before D is formed (for ``diff``: A1 and A2 alternating along the
        heads, ``heads`` counting both)."""
        self._check_kind(kind)
        self._check_layer(layer)
        heads = list(range(self.num_heads)) if heads is None else list(heads)
        for head in heads:
            self.check(layer, head, kind)
        unit = 2 if kind == "diff" else 1
        for block in self._logit_blocks(layer, self._softmax_heads(heads, kind), self._rows(rows), unit):
            probs = torch.softmax(block.values, dim=-1)  # [h (2h for diff, A1 and A2 alternating), r, e]
            if softmax is not None:
                softmax(Block(block.heads, block.span, block.rows, probs))
            if kind == "diff":  # A1 − λ·A2, what the layer applies to V
                probs = torch.sub(probs[0::2], probs[1::2], alpha=self.lambdas[layer])
                block.heads = slice(block.heads.start // 2, block.heads.stop // 2)
            block.values = probs
            yield block

    def logit_rows(self, layer: int, rows: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Scaled, causally masked pre-softmax logits ``[len(heads), len(rows), N]`` in float32
        for the query positions ``rows`` (a 1-D index tensor) of softmax heads ``heads``."""
        positions = self._rows(rows)
        out = torch.full((len(heads), len(positions), self.seq_len), float("-inf"))
        for block in self._logit_blocks(layer, list(heads), positions):
            out[block.heads, block.span, :block.values.shape[2]] = block.values.cpu()
        return out

    def causal_logits(self, layer: int) -> Iterator[torch.Tensor]:
        """Every scaled pre-softmax logit of a layer's causal (query, key) pairs, all softmax heads
        (both maps of a differential head), as 1-D blocks: the stream activation outliers summarise."""
        heads = list(range(self._qk(layer)[0].shape[0]))
        for block in self._logit_blocks(layer, heads, list(range(self.seq_len))):
            logits, first, count = block.values, int(block.rows[0]), len(block.rows)
            yield logits[:, :, :first + 1].reshape(-1)  # keys up to the block's first row: seen by every row
            if count > 1:  # later keys: row first + i sees first + 1 .. first + i, a strictly lower triangle
                row, col = torch.tril_indices(count, count - 1, offset=-1, device=logits.device)
                later = logits[:, :, first + 1:].reshape(len(logits), -1)  # [h, r·(r − 1)]
                yield later.index_select(1, row * (count - 1) + col).reshape(-1)

    def _check_value(self, kind: str, value: str) -> None:
        if value not in VALUES:
            raise ValueError(f"unknown cell value {value!r}; choose one of {', '.join(VALUES)}")
        if value != "weight" and kind != self.kinds[0]:
            raise ValueError(f"contributions come from the map a head applies to its values ({self.kinds[0]!r}); "
                             f"{kind!r} alone adds nothing to the output: choose {self.kinds[0]!r} or the weights")

    def value_blocks(self, layer: int, head: int, kind: str, value: str = "weight", rows=None) -> Iterator["Block"]:
        """``map_blocks`` of one head whose values hold ``value`` (``VALUES``): the map's weights, or
        the keys' contributions through the head, ‖c_ik‖ ("norm") or c_ik·o_i/‖o_i‖ ("projection")."""
        if value == "weight":
            yield from self.map_blocks(layer, kind, [head], rows)
            return
        self.check(layer, head, kind)
        self._check_value(kind, value)
        for block, norms, projections, _ in self._contribution_values(layer, head, self._rows(rows), value == "norm",
                                                                     value == "projection"):
            block.values = (norms if value == "norm" else projections)[None]  # [1, r, e]
            yield block

    def rows(self, layer: int, head: int, kind: str, rows, value: str = "weight") -> torch.Tensor:
        """Rows ``[r, N]`` (float32, CPU) of one map (or its ``value``) for the query positions ``rows``,
        in the order given."""
        self.check(layer, head, kind)
        wanted = torch.as_tensor(rows).reshape(-1)
        positions = self._rows(wanted)
        out = torch.zeros(len(positions), self.seq_len)
        for block in self.value_blocks(layer, head, kind, value, positions):
            out[block.span, :block.values.shape[2]] = block.values[0].cpu()
        return out[torch.searchsorted(torch.tensor(positions), wanted)]

    def attention(self, layer: int, head: int, kind: str) -> torch.Tensor:
        """The full ``[N, N]`` map (float32, CPU) of one head: ``diff`` = A1 − λ·A2 for DiffLlama
        (what the model applies to V), ``a1``/``a2`` its two softmax maps, ``softmax`` otherwise."""
        budget.check(budget.map_bytes(self.seq_len, self.seq_len), f"the full {self.seq_len}×{self.seq_len} map",
                     "use the pooled map or a region instead")
        return self.region(layer, head, kind, (0, self.seq_len), (0, self.seq_len))

    def region(self, layer: int, head: int, kind: str, rows: tuple[int, int], cols: tuple[int, int],
               value: str = "weight") -> torch.Tensor:
        """The exact values ``[b − a, d − c]`` (float32, CPU) of one head's map (or its ``value``) for
        query positions ``rows = (a, b)`` and key positions ``cols = (c, d)``: a full-resolution zoom.
        Only those rows are computed (each over its keys 0..row, which its softmax needs)."""
        self.check(layer, head, kind)
        (a, b), (c, d) = rows, cols
        if not (0 <= a < b <= self.seq_len and 0 <= c < d <= self.seq_len):
            raise ValueError(f"a region needs 0 ≤ start < end ≤ {self.seq_len} for rows and columns; got rows {rows}, columns {cols}")
        budget.check(budget.map_bytes(b - a, b), f"a {b - a}×{d - c} region", "zoom into fewer rows")
        out = torch.zeros(b - a, d - c)
        for block in self.value_blocks(layer, head, kind, value, range(a, b)):
            end = min(block.values.shape[2], d)
            if end > c:
                out[block.span, :end - c] = block.values[0, :, c:end].cpu()
        return out

    def contributions(self, layer: int, head: int, rows=None) -> ContributionMap:
        """What each key adds to the residual stream through one head (see the "contribution" measure),
        for the query positions ``rows`` (all by default), computed a block of rows at a time.

        Key k's contribution vector to query i's output is ``c_ik = w_ik · W_h v_k``: ``v_k`` its value
        vector (``_values``), ``W_h`` the head's slice of the output projection, and ``w_ik`` the weight the
        head really gives it: ``(1 − λ_init)·s_i·D_ik`` for a differential head, ``s_i`` the sub-layer
        RMSNorm's scale of row i, and ``A_ik`` otherwise. ``Σ_k c_ik`` is the head's part of the attention
        output. The output projection's bias (Persimmon's ``dense`` has one) is added once per token
        whatever the keys are, so it is no key's contribution and is left out."""
        kind = self.kinds[0]
        self.check(layer, head, kind)
        positions = self._rows(rows)
        budget.check(2 * budget.map_bytes(len(positions), self.seq_len), f"contributions of {len(positions)} rows",
                     "ask for fewer rows")
        norms = torch.zeros(len(positions), self.seq_len)
        projections = torch.zeros(len(positions), self.seq_len)
        output_norms = torch.zeros(len(positions))
        for block, block_norms, block_projections, sizes in self._contribution_values(layer, head, positions):
            end = block_norms.shape[1]
            norms[block.span, :end] = block_norms.cpu()
            projections[block.span, :end] = block_projections.cpu()
            output_norms[block.span] = sizes.cpu()
        return ContributionMap(layer=layer, head=head, kind=kind, rows=positions, norms=norms.numpy(),
                               projections=projections.numpy(), output_norms=output_norms.numpy())

    def _head_projection(self, layer: int, head: int) -> torch.Tensor:
        """``W_h`` [D, w] (float32): the columns of the layer's output projection that head ``head``'s
        output (its w numbers of the attention output) passes through."""
        attn = self._model.base_model.layers[layer].self_attn
        projection = attn.o_proj if hasattr(attn, "o_proj") else attn.dense  # Persimmon names it dense
        width = projection.weight.shape[1] // self._model.config.num_attention_heads * (2 if self.arch == "diffllama" else 1)
        return projection.weight[:, head * width:(head + 1) * width].float()

    def _head_values(self, layer: int, head: int) -> torch.Tensor:
        """The value vectors ``[N, w]`` differential/softmax head ``head`` mixes. GQA: query head h reads
        KV head h // groups. A differential head's A2 (softmax head j + H/2) reads KV head j // groups +
        KV/2, whose value vectors equal KV head j // groups' (the layer repeats V's halves): so D applies
        to one v per key."""
        values = self._values(layer)  # [KV, N, w]
        return values[head // (self._model.config.num_attention_heads // values.shape[0])]

    @torch.no_grad()
    def _contribution_blocks(self, layer: int, head: int, rows: list[int]) -> Iterator[tuple["Block", torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per block of query rows: the block, the weights ``w`` [r, e] the head really gives each key,
        the keys' value vectors ``v`` [e, w] and the weighted sums ``m_i = Σ_k w_ik v_k`` [r, w]. With
        ``W_h = _head_projection`` [D, w]: ``c_ik = w_ik·W_h v_k`` and the head's output ``o_i = W_h m_i``."""
        attn = self._model.base_model.layers[layer].self_attn
        value = self._head_values(layer, head)  # [N, w]
        for block in self.map_blocks(layer, self.kinds[0], [head], rows):
            weights = block.values[0]  # [r, e]
            end = weights.shape[1]
            mixed = weights @ value[:end]  # [r, w]
            if self.arch == "diffllama":  # the sub-layer RMSNorm (no learned weight) scales each row of D·V
                eps = attn.groupnorm.eps if attn.groupnorm.eps is not None else torch.finfo(mixed.dtype).eps
                scale = (1 - self.lambda_inits[layer]) * torch.rsqrt(mixed.pow(2).mean(-1, keepdim=True) + eps)  # [r, 1]
                weights, mixed = weights * scale, mixed * scale
            yield block, weights, value[:end], mixed

    @torch.no_grad()
    def _contribution_values(self, layer: int, head: int, rows: list[int], norms: bool = True,
                             projections: bool = True) -> Iterator[tuple["Block", torch.Tensor | None, torch.Tensor | None, torch.Tensor]]:
        """Per block of query rows: the block, ‖c_ik‖ [r, e] (if ``norms``), c_ik·o_i/‖o_i‖ [r, e] (if
        ``projections``) and ‖o_i‖ [r]. Computed in the value space through G = W_hᵀW_h [w, w], so no
        vector of the model's width D is built per key: ‖c_ik‖ = |w_ik|·√(v_kᵀ G v_k) and
        c_ik·o_i = w_ik·v_kᵀ G m_i."""
        gram = self._head_projection(layer, head)
        gram = gram.T @ gram  # [w, w]
        if norms:  # ‖W_h v_k‖ of every key [N], once
            every = self._head_values(layer, head)  # [N, w]
            key_norms = ((every @ gram) * every).sum(-1).clamp_min(0).sqrt()
        for block, weights, values, mixed in self._contribution_blocks(layer, head, rows):
            pulled = mixed @ gram  # [r, w]: W_hᵀ o_i
            sizes = (pulled * mixed).sum(-1).clamp_min(0).sqrt()  # ‖o_i‖ [r]
            block_norms = weights.abs() * key_norms[:weights.shape[1]] if norms else None
            block_projections = None
            if projections:  # a zero output has no direction: its keys project to 0
                block_projections = weights * (pulled @ values.T) / sizes.clamp_min(torch.finfo(sizes.dtype).tiny)[:, None]
            yield block, block_norms, block_projections, sizes

    def pooled(self, layer: int, head: int, kind: str, max_size: int = 512, value: str = "weight") -> "PooledMap":
        """A display-sized map of at most ``max_size`` × ``max_size`` blocks (see ``PooledMap``)."""
        values, edges = self.pooled_heads(layer, kind, max_size, [head], value=value)
        return PooledMap(values=values[0], edges=edges)

    def pooled_heads(self, layer: int, kind: str, max_size: int, heads: list[int] | None = None,
                     rows: list[int] | None = None, value: str = "weight",
                     observe: Callable[["Block"], None] | None = None) -> tuple[torch.Tensor, list[int]]:
        """Pooled maps ``[h, B, B]`` (float32, CPU) of differential/softmax heads ``heads`` (all by
        default), holding ``value`` (``VALUES``), and their block edges. With ``rows`` (query positions,
        every block holding some), a block's value is the mean over those rows only: an evenly spaced
        sample (``sample_rows``) makes the overview cheap, and equals the exact map when every row is
        sampled.

        Pooled softmax maps are kept in the cache, so A1, A2 and D = A1 − λ·A2 of one head (the
        decomposition view) cost one computation; D's pooled map is A1's − λ·A2's (pooling is linear).
        With ``observe`` (weights only), the maps of ``kind`` are pooled from one pass that also hands
        each of their blocks to ``observe`` (e.g. the overview's head statistics), without the cache."""
        self._check_kind(kind)
        heads = list(range(self.num_heads)) if heads is None else list(heads)
        for head in heads:
            self.check(layer, head, kind)
        self._check_value(kind, value)
        edges = block_edges(self.seq_len, max_size)
        positions = self._rows(rows)
        if observe is not None:
            if value != "weight":
                raise ValueError("observe reads the blocks of the weights; contributions are pooled one head at a time")

            def observed(blocks):
                for block in blocks:
                    observe(block)
                    yield block

            return self._pool(observed(self.map_blocks(layer, kind, heads, positions)), len(heads), edges, positions), edges
        if value != "weight":  # contributions are not linear in the softmax maps: one head at a time
            return torch.stack([self._pool(self.value_blocks(layer, h, kind, value, positions), 1, edges, positions)[0]
                                for h in heads]), edges
        softmax_heads = self._softmax_heads(heads, kind)
        keys = {h: ("pooled", layer, h, tuple(edges), None if rows is None else tuple(positions)) for h in softmax_heads}
        maps = {h: self.cache.lookup(key) for h, key in keys.items()}
        missing = [h for h, values in maps.items() if values is None]
        if missing:  # in one pass over the layer's rows
            for h, values in zip(missing, self._pool(self._softmax_blocks(layer, missing, positions), len(missing),
                                                     edges, positions)):
                maps[h] = values
                self.cache.store(keys[h], values, _tensor_bytes(values))
        stacked = torch.stack([maps[h] for h in softmax_heads])  # [h (2h for diff, A1 and A2 alternating), B, B]
        if kind == "diff":
            return torch.sub(stacked[0::2], stacked[1::2], alpha=self.lambdas[layer]), edges
        return stacked, edges

    def overview_rows(self, size: int, max_logits: int = OVERVIEW_LOGITS) -> list[int] | None:
        """The query positions an overview of every layer × head at ``size`` blocks averages over:
        None (every row) when that is at most ``max_logits`` causal logits, else the same number of
        evenly spaced rows in each block (``sample_rows``), as many as the bound allows."""
        per_row = self.num_layers * self._model.config.num_attention_heads  # logits of one query row per key it sees
        if per_row * self.seq_len * (self.seq_len + 1) // 2 <= max_logits:
            return None
        edges = block_edges(self.seq_len, size)
        # sampled rows see N/2 keys on average
        per_block = max(1, max_logits // (per_row * max(self.seq_len // 2, 1) * (len(edges) - 1)))
        return sample_rows(self.seq_len, edges, per_block)

    @torch.no_grad()
    def _softmax_blocks(self, layer: int, heads: list[int], rows: list[int]) -> Iterator["Block"]:
        """The maps of softmax heads ``heads`` (A1 and A2 alike) at the query positions ``rows``."""
        for block in self._logit_blocks(layer, heads, rows):
            block.values = torch.softmax(block.values, dim=-1)  # [h, r, e]
            yield block

    def _pool(self, blocks: Iterator["Block"], count: int, edges: list[int], rows: list[int]) -> torch.Tensor:
        """Pooled maps ``[count, B, B]`` (CPU) of the ``blocks`` of ``count`` heads over the query
        positions ``rows``: the mean over each block of rows, the sum over each block of keys."""
        size = len(edges) - 1
        block_of_row = torch.bucketize(torch.tensor(rows), torch.tensor(edges[1:]), right=True)  # [len(rows)]
        rows_per_block = torch.bincount(block_of_row, minlength=size).float()
        if not bool((rows_per_block > 0).all()):
            raise ValueError("every block of rows needs at least one sampled row")
        sums = None  # row blocks summed, columns not yet
        for block in blocks:
            if sums is None:
                sums = torch.zeros(count, size, self.seq_len, device=block.values.device)
            values = block.values  # [h, r, e]
            sums[block.heads, :, :values.shape[2]].index_add_(1, block_of_row[block.span].to(values.device), values)
        return (pool_columns(sums, edges) / rows_per_block[:, None].to(sums.device)).cpu()  # [count, B, B]


@dataclass
class Block:
    """A piece of one layer's maps (or logits): ``values[i, j, k]`` belongs to head ``heads`` [i] (an
    index into the heads asked for), query position ``rows[j]`` (entry ``span`` [j] of the positions
    asked for) and key position k < e; keys from e on are in the future of every row of the block."""

    heads: slice
    span: slice
    rows: torch.Tensor  # [r] query positions
    values: torch.Tensor  # [h, r, e]


def block_values(device: torch.device) -> int:
    """Numbers in one block of logits: 2 MB of float32 stays in a CPU core's cache while softmax and
    the statistics run over it; a GPU wants large launches instead."""
    return 1 << 25 if device.type == "cuda" else 1 << 19


def sample_rows(n: int, edges: list[int], per_block: int) -> list[int]:
    """``per_block`` evenly spaced query positions in each block of ``edges`` (all of a smaller block):
    the sample an overview averages over."""
    rows = []
    for start, end in zip(edges, edges[1:]):
        size = end - start
        count = min(size, per_block)
        rows.extend(start + (2 * i + 1) * size // (2 * count) for i in range(count))
    return rows


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


def pool_columns(values: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """Sum ``values`` [..., N] over column blocks → [..., B]."""
    block_of_col = torch.bucketize(torch.arange(values.shape[-1]), torch.tensor(edges[1:]), right=True).to(values.device)
    out = torch.zeros(*values.shape[:-1], len(edges) - 1, device=values.device)
    return out.index_add_(values.dim() - 1, block_of_col, values)


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


class IncrementalDecoder:
    """The text of a growing token sequence, decoded in one linear pass, equal to decoding the whole
    prefix each time (special tokens skipped).

    A step decodes only the tokens since the text last ended on a complete character, plus one token
    before them: byte-level pieces of one character decode only together (a prefix that ends inside
    a character shows U+FFFD until its last byte arrives), and decoders such as sentencepiece's drop
    the leading space of the first token they see, which the extra token absorbs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        self.ids: list[int] = []  # the non-special tokens so far
        self.text = ""  # decoded ids[:stable]: no later token can change it
        self.tail = ""  # the rest of the text decoded so far, which the next token may still change
        self._context, self._stable, self._context_length = 0, 0, 0  # window start; committed end; len(decode(ids[context:stable]))

    def add(self, token_id: int) -> int | None:
        """Append one token; the length of the text decoded so far, None for a special token."""
        if token_id in self.special:
            return None
        self.ids.append(token_id)
        window = self.tokenizer.decode(self.ids[self._context:], skip_special_tokens=True)
        self.tail = window[self._context_length:]
        length = len(self.text) + len(self.tail)
        if not window.endswith("\ufffd"):  # complete characters: commit, keep one token of context
            self.text += self.tail
            self.tail = ""
            self._context, self._stable = len(self.ids) - 1, len(self.ids)
            self._context_length = len(self.tokenizer.decode(self.ids[self._context:], skip_special_tokens=True))
        return length


def decoded_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (special tokens (0, 0)):
    token k spans from the end of the text of the tokens before it to the end of the text of
    ``ids[:k + 1]`` (the prefix, not the token: byte-level pieces of one character only decode together)."""
    decoder, offsets, end = IncrementalDecoder(tokenizer), [], 0
    for token_id in ids:
        length = decoder.add(token_id)
        offsets.append((0, 0) if length is None else (end, length))
        end = end if length is None else length
    return decoder.text + decoder.tail, offsets


@torch.no_grad()
def trace_ids(model, tokenizer, arch: str, ids: list[int], offsets, sequence_ids) -> Trace:
    """One forward pass over ``ids`` with hidden states kept, wrapped as a ``Trace``."""
    budget.check(budget.forward_bytes(model, len(ids)), f"a trace of {len(ids)} tokens", "shorten the input")
    config = model.config
    output = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True)
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
