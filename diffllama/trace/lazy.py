"""Lazy attention traces: one forward pass now, any layer's attention maps later.

A forward pass keeps only what is linear in the sequence length N: the residual stream entering
each decoder layer (``output_hidden_states``) and each layer's post-RoPE keys, both references to
tensors the pass computed anyway. A map's queries are recomputed on demand by the layer's own
modules (``projections``) for the rows a view reads, so queries and keys are exactly the model's own
(no forked RoPE, qk-norm or projection code), and nothing of size layers × heads × N × N ever exists.
What differs between architectures is asked of the trace's ``architecture`` (``architectures/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .. import budget
from ..records import VALUES, ContributionMap
from . import projections
from .architectures import Architecture, architecture_of
from .blocks import Block, logit_blocks
from .cache import LayerCache, tensor_bytes
from .contributions import contribution_blocks, contribution_values, head_projection
from .pooling import OVERVIEW_LOGITS, PooledMap, block_edges, overview_rows, pool

QUERY_ROWS_SHARE = 0.5  # a view reading at most this share of a layer's rows projects only their queries


@dataclass
class Trace:
    """One forward pass over one sequence, from which any layer/head/kind of attention is computed
    on request. Token-aligned fields are lists of plain values; ``logits`` is the task head's output
    of the same pass (``[N, vocab]``, ``[N, labels]``, ``[labels]`` or ``[N, 2]`` for QA start/end).

    Every map is built from ``Block`` s of a few heads × query rows × keys (``map_blocks``), sized to
    stay in the CPU's cache. A view of a few rows projects only their queries; a layer's queries for
    every row are computed once and kept in the trace's ``cache`` (bounded: ``budget.qk_cache_bytes``),
    shared by every head and view that reads the layer."""

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
    cache: LayerCache = field(repr=False, default=None)
    keys: tuple[torch.Tensor, ...] = field(repr=False, default=())  # L × [KV, N, d] float32: post-RoPE keys of the pass
    architecture: Architecture = field(repr=False, default=None)  # what differs between architectures, and the shape

    def __post_init__(self):
        if self.architecture is None:
            self.architecture = architecture_of(self._model.config)
        if self.cache is None:  # every layer's queries when the budget allows, and room for pooled maps
            self.cache = LayerCache(1.25 * min(budget.qk_cache_bytes(), self.num_layers * self._qk_bytes()))

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.architecture.kinds

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)

    @property
    def device(self) -> torch.device:
        """Where the maps are computed: the model's device."""
        return self.hidden_states[0].device

    @property
    def nbytes(self) -> int:
        """Bytes this trace may hold in tensors: the pass's own (linear in N by construction: hidden
        states, keys, logits) plus its cache's bound (also linear in N: at most every layer's queries)."""
        return tensor_bytes(self.logits, *self.hidden_states, *self.keys) + int(self.cache.max_bytes)

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

    def _check_heads(self, layer: int, kind: str, heads) -> list[int]:
        """``heads`` (all by default) as a list, each checked."""
        self._check_kind(kind)
        self._check_layer(layer)
        heads = list(range(self.num_heads)) if heads is None else list(heads)
        for head in heads:
            self.check(layer, head, kind)
        return heads

    def _check_value(self, kind: str, value: str) -> None:
        if value not in VALUES:
            raise ValueError(f"unknown cell value {value!r}; choose one of {', '.join(VALUES)}")
        if value != "weight" and kind != self.kinds[0]:
            raise ValueError(f"contributions come from the map a head applies to its values ({self.kinds[0]!r}); "
                             f"{kind!r} alone adds nothing to the output: choose {self.kinds[0]!r} or the weights")

    def _rows(self, rows) -> list[int]:
        """Query positions as an ascending list (all of them by default)."""
        positions = range(self.seq_len) if rows is None else sorted(torch.as_tensor(rows).reshape(-1).long().tolist())
        if positions and not 0 <= positions[0] <= positions[-1] < self.seq_len:
            raise ValueError(f"token positions must lie in 0..{self.seq_len - 1}")
        return list(positions)

    # --- queries, keys and values: the layer's own ----------------------------------------------
    def _qk_bytes(self) -> int:
        """Bytes of one layer's cached queries of every row (float32)."""
        return self.architecture.shape.query_bytes(self.seq_len)

    def _queries(self, layer: int, rows: list[int]) -> torch.Tensor:
        """Post-RoPE queries ``[H, len(rows), d]`` (float32) of a layer at the positions ``rows``
        (ascending), times the layer's scaling (d^-0.5), so that their products with the keys are the
        scaled logits (one multiplication per query, not one per logit): from the layer's queries of
        every row when the cache holds them or the view reads more than ``QUERY_ROWS_SHARE`` of the rows
        (then computed once and kept), else those rows' only. Either is computed once while the cache holds it."""
        self._check_layer(layer)

        def scaled(only: list[int] | None = None) -> torch.Tensor:
            queries = projections.queries(self._model, self.hidden_states[layer], layer, only)
            return queries.mul_(self._model.base_model.layers[layer].self_attn.scaling)

        every = rows == list(range(self.seq_len))
        full = self.cache.lookup(("q", layer))
        if full is None and (every or len(rows) > QUERY_ROWS_SHARE * self.seq_len):
            full = self.cache.get(("q", layer), scaled, tensor_bytes)
        if full is not None:
            return full if every else full[:, torch.tensor(rows, device=full.device)]
        return self.cache.get(("q", layer, tuple(rows)), lambda: scaled(rows), tensor_bytes)

    def _values(self, layer: int) -> torch.Tensor:
        """Value vectors ``[KV, N, w]`` (float32) of a layer, as the layer hands them to its attention
        calls, each call's side by side (``AttentionShape.value_width``), computed once per trace while
        the cache holds them."""
        self._check_layer(layer)
        return self.cache.get(("v", layer), lambda: projections.values(self._model, self.hidden_states[layer], layer,
                                                                      self.architecture.shape.value_calls), tensor_bytes)

    def _logit_blocks(self, layer: int, heads: list[int], rows: list[int], unit: int = 1,
                      masked: bool = True) -> Iterator[Block]:
        """Scaled, causally masked (unless ``masked`` is False) pre-softmax logits of softmax heads ``heads``
        for the query positions ``rows`` (ascending), in blocks of a few heads (whole groups of ``unit``) ×
        rows × keys (``blocks.logit_blocks``)."""
        self._check_layer(layer)
        if not rows:
            return iter(())
        return logit_blocks(self._queries(layer, rows), self.keys[layer], heads, rows, unit, masked)

    # --- maps and logits ------------------------------------------------------------------------
    @torch.no_grad()
    def map_blocks(self, layer: int, kind: str, heads: list[int] | None = None, rows=None,
                   softmax: Callable[[Block], None] | None = None) -> Iterator[Block]:
        """The maps of ``kind`` for differential/softmax heads ``heads`` (all by default) at the query
        positions ``rows`` (all by default), as ``Block`` s of a few heads × rows × keys 0..e-1 (later
        keys are zero in every row). The building block of every view: no caller holds a whole map.
        So that a caller reading the softmax maps too needs no second pass, ``softmax``, if given, is
        handed each block of them before the map is formed (``Architecture.softmax_maps`` of each
        head in turn along the heads, ``heads`` counting them all: for ``diff``, A1 and A2 alternating).
        A block of a softmax map (``a1``, ``a2``, ``softmax``) also holds the logits it is the softmax of."""
        unit = len(self.architecture.softmax_maps(kind))
        own_logits = self.architecture.softmax_maps(kind) == (kind,)
        lambda_ = self.lambdas[layer] if self.lambdas else None
        for block in self.logit_blocks(layer, kind, heads, rows, masked=True):
            probs = torch.softmax(block.values, dim=-1)  # [h·unit, r, e]
            if softmax is not None:
                softmax(Block(slice(block.heads.start * unit, block.heads.stop * unit), block.span, block.rows, probs))
            block.logits = block.values if own_logits else None
            block.values = self.architecture.combine(probs, kind, lambda_)
            yield block

    @torch.no_grad()
    def logit_blocks(self, layer: int, kind: str, heads: list[int] | None = None, rows=None,
                     masked: bool = False) -> Iterator[Block]:
        """The pre-softmax logits behind the maps of ``kind`` for differential/softmax heads ``heads`` (all by
        default) at the query positions ``rows`` (all by default), in the ``Block`` s ``map_blocks`` forms its maps
        from: each head's softmax maps in turn along the block's values (for ``diff``: A1, A2), ``heads`` the
        map heads. Unless ``masked``, a row's keys after its own position hold no logit of the map and are not
        to be read."""
        heads = self._check_heads(layer, kind, heads)
        unit = len(self.architecture.softmax_maps(kind))
        for block in self._logit_blocks(layer, self.architecture.softmax_heads(heads, kind), self._rows(rows), unit,
                                        masked):
            block.heads = slice(block.heads.start // unit, block.heads.stop // unit)
            yield block

    def logit_rows(self, layer: int, rows: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """Scaled, causally masked pre-softmax logits ``[len(heads), len(rows), N]`` in float32
        for the query positions ``rows`` (a 1-D index tensor) of softmax heads ``heads``."""
        positions = self._rows(rows)
        out = torch.full((len(heads), len(positions), self.seq_len), float("-inf"))
        for block in self._logit_blocks(layer, list(heads), positions):
            out[block.heads, block.span, :block.values.shape[2]] = block.values.cpu()
        return out

    def logits_at(self, layer: int, heads: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Scaled pre-softmax logits ``[len(heads)]`` of softmax heads ``heads`` at query positions ``rows`` and key
        positions ``keys`` (1-D index tensors of one length, each key at or before its row): one dot
        product each, from the layer's queries of every row (computed once while the cache holds them)."""
        queries = self._queries(layer, list(range(self.seq_len)))  # [H, N, d]
        heads, rows, keys = (index.to(queries.device) for index in (heads, rows, keys))
        groups = queries.shape[0] // self.keys[layer].shape[0]
        return (queries[heads, rows] * self.keys[layer][heads // groups, keys]).sum(-1)

    def causal_logits(self, layer: int) -> Iterator[Block]:
        """Every scaled pre-softmax logit of a layer's causal (query, key) pairs, all softmax heads
        (both maps of a differential head), in ``Block`` s (row ``rows[i]`` reads keys 0..rows[i]; its later
        keys are left unmasked, not read): the stream activation outliers summarise."""
        return self._logit_blocks(layer, list(range(self.architecture.shape.heads)), list(range(self.seq_len)), masked=False)

    def value_blocks(self, layer: int, head: int, kind: str, value: str = "weight", rows=None) -> Iterator[Block]:
        """``map_blocks`` of one head whose values hold ``value`` (``VALUES``): the map's weights, or
        the keys' contributions through the head, ‖c_ik‖ ("norm") or c_ik·o_i/‖o_i‖ ("projection")."""
        if value == "weight":
            yield from self.map_blocks(layer, kind, [head], rows)
            return
        self.check(layer, head, kind)
        self._check_value(kind, value)
        for block, norms, projected, _ in contribution_values(self, layer, head, self._rows(rows), value == "norm",
                                                              value == "projection"):
            block.values = (norms if value == "norm" else projected)[None]  # [1, r, e]
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

    # --- contributions (see ``contributions``) --------------------------------------------------
    def contributions(self, layer: int, head: int, rows=None) -> ContributionMap:
        """What each key adds to the residual stream through one head (see the "contribution" measure
        and ``contributions``), for the query positions ``rows`` (all by default)."""
        kind = self.kinds[0]
        self.check(layer, head, kind)
        positions = self._rows(rows)
        budget.check(2 * budget.map_bytes(len(positions), self.seq_len), f"contributions of {len(positions)} rows",
                     "ask for fewer rows")
        norms = torch.zeros(len(positions), self.seq_len)
        projected = torch.zeros(len(positions), self.seq_len)
        output_norms = torch.zeros(len(positions))
        for block, block_norms, block_projections, sizes in contribution_values(self, layer, head, positions):
            end = block_norms.shape[1]
            norms[block.span, :end] = block_norms.cpu()
            projected[block.span, :end] = block_projections.cpu()
            output_norms[block.span] = sizes.cpu()
        return ContributionMap(layer=layer, head=head, kind=kind, rows=positions, norms=norms.numpy(),
                               projections=projected.numpy(), output_norms=output_norms.numpy())

    def _head_projection(self, layer: int, head: int) -> torch.Tensor:
        return head_projection(self, layer, head)

    def _contribution_blocks(self, layer: int, head: int, rows: list[int]):
        return contribution_blocks(self, layer, head, rows)

    # --- pooled maps ----------------------------------------------------------------------------
    def pooled(self, layer: int, head: int, kind: str, max_size: int = 512, value: str = "weight") -> PooledMap:
        """A display-sized map of at most ``max_size`` × ``max_size`` blocks (see ``PooledMap``)."""
        values, edges = self.pooled_heads(layer, kind, max_size, [head], value=value)
        return PooledMap(values=values[0], edges=edges)

    def pooled_heads(self, layer: int, kind: str, max_size: int, heads: list[int] | None = None,
                     rows: list[int] | None = None, value: str = "weight",
                     observe: Callable[[Block], None] | None = None) -> tuple[torch.Tensor, list[int]]:
        """Pooled maps ``[h, B, B]`` (float32, CPU) of differential/softmax heads ``heads`` (all by
        default), holding ``value`` (``VALUES``), and their block edges. With ``rows`` (query positions,
        every block holding some), a block's value is the mean over those rows only: an evenly spaced
        sample (``sample_rows``) makes the overview cheap, and equals the exact map when every row is
        sampled.

        Pooled softmax maps are kept in the cache, so A1, A2 and D = A1 − λ·A2 of one head (the
        decomposition view) cost one computation; D's pooled map is A1's − λ·A2's (pooling is linear).
        With ``observe`` (weights only), the maps of ``kind`` are pooled from one pass that also hands
        each of their blocks to ``observe`` (e.g. the overview's head statistics), without the cache."""
        heads = self._check_heads(layer, kind, heads)
        self._check_value(kind, value)
        edges = block_edges(self.seq_len, max_size)
        positions = self._rows(rows)
        if observe is not None:
            if value != "weight":
                raise ValueError("observe reads the blocks of the weights; contributions are pooled one head at a time")
            return pool(_observed(self.map_blocks(layer, kind, heads, positions), observe), len(heads), edges, positions,
                        self.seq_len), edges
        if value != "weight":  # contributions are not linear in the softmax maps: one head at a time
            return torch.stack([pool(self.value_blocks(layer, h, kind, value, positions), 1, edges, positions,
                                     self.seq_len)[0] for h in heads]), edges
        return self._pooled_softmax(layer, kind, heads, edges, positions, rows is None), edges

    def _pooled_softmax(self, layer: int, kind: str, heads: list[int], edges: list[int], positions: list[int],
                        every: bool) -> torch.Tensor:
        """``pooled_heads`` of weights: the maps of ``kind`` combined from the pooled softmax maps
        behind them, each computed once while the cache holds it, the missing ones in one pass."""
        softmax_heads = self.architecture.softmax_heads(heads, kind)
        keys = {h: ("pooled", layer, h, tuple(edges), None if every else tuple(positions)) for h in softmax_heads}
        maps = {h: self.cache.lookup(key) for h, key in keys.items()}
        missing = [h for h, values in maps.items() if values is None]
        if missing:  # in one pass over the layer's rows
            blocks = _softmaxed(self._logit_blocks(layer, missing, positions))
            for h, values in zip(missing, pool(blocks, len(missing), edges, positions, self.seq_len)):
                maps[h] = values
                self.cache.store(keys[h], values, tensor_bytes(values))
        stacked = torch.stack([maps[h] for h in softmax_heads])  # [h·m, B, B]: each head's softmax maps in turn
        return self.architecture.combine(stacked, kind, self.lambdas[layer] if self.lambdas else None)

    def overview_rows(self, size: int, max_logits: int = OVERVIEW_LOGITS) -> list[int] | None:
        """The query positions an overview of every layer × head at ``size`` blocks averages over
        (``pooling.overview_rows``)."""
        return overview_rows(self.seq_len, self.num_layers * self.architecture.shape.heads, size, max_logits)


def _observed(blocks: Iterator[Block], observe: Callable[[Block], None]) -> Iterator[Block]:
    for block in blocks:
        observe(block)
        yield block


def _softmaxed(blocks: Iterator[Block]) -> Iterator[Block]:
    """Blocks of logits as blocks of their softmax maps."""
    for block in blocks:
        block.values = torch.softmax(block.values, dim=-1)  # [h, r, e]
        yield block
