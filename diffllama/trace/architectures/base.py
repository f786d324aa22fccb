"""What the trace needs to know of an attention architecture, declared once per architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass(frozen=True)
class AttentionShape:
    """The attention layout of a model, derived once from its config."""

    heads: int  # softmax heads per layer (config.num_attention_heads): the attention function's query heads
    kv_heads: int  # key/value heads (GQA: query head h reads KV head h // groups)
    head_dim: int  # width of one query, key and value head
    map_heads: int  # the heads a trace's views count: differential heads (H/2) for DiffLlama, else ``heads``
    value_calls: int  # attention-function calls per layer, each with its own values (DiffLlama: two halves of V)

    @property
    def groups(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    @property
    def value_width(self) -> int:
        """Width of the value vector one map head mixes: both calls' vectors side by side."""
        return self.value_calls * self.head_dim

    def query_bytes(self, n: int) -> int:
        """Bytes of one layer's queries over ``n`` tokens (float32)."""
        return self.heads * self.head_dim * n * 4

    def key_bytes(self, n: int) -> int:
        """Bytes of one layer's keys over ``n`` tokens (float32)."""
        return self.kv_heads * self.head_dim * n * 4

    def kv_cache_bytes(self, layers: int, n: int, value_size: int) -> int:
        """Bytes of a generation's key/value cache over ``n`` tokens."""
        return 2 * layers * self.kv_heads * self.head_dim * n * value_size


class Architecture:
    """An attention architecture as the trace reads it: a standard softmax head per query head.
    Subclasses declare what differs (``architectures/<name>.py``); an instance holds the shape of
    one model, derived once from its config."""

    name: ClassVar[str]  # config.model_type
    class_prefix: ClassVar[str]  # transformers' class names: <prefix>ForCausalLM, ...
    kinds: ClassVar[tuple[str, ...]] = ("softmax",)  # map kinds; the first is the map applied to the values
    value_calls: ClassVar[int] = 1

    def __init__(self, config):
        self.shape = self.attention_shape(config)

    @classmethod
    def attention_shape(cls, config) -> AttentionShape:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return AttentionShape(heads, kv_heads, head_dim, cls.map_heads_of(heads), cls.value_calls)

    @staticmethod
    def map_heads_of(heads: int) -> int:
        return heads

    def softmax_maps(self, kind: str) -> tuple[str, ...]:
        """The softmax maps a map of ``kind`` is formed from, in the order ``softmax_heads`` lists them."""
        return (kind,)

    def softmax_heads(self, heads: list[int], kind: str) -> list[int]:
        """The softmax (query) heads behind map heads ``heads``: for each head, one per ``softmax_maps``."""
        return list(heads)

    def combine(self, softmax: torch.Tensor, kind: str, lambda_: float | None) -> torch.Tensor:
        """The maps of ``kind`` from their softmax maps ``[h·m, ...]`` (the ``m = len(softmax_maps)``
        maps of each head in turn); linear, so it applies to pooled maps too."""
        return softmax

    def output_projection(self, attn) -> torch.nn.Linear:
        """The layer's output projection (its input: every map head's output side by side)."""
        return attn.o_proj

    def post_mix_scale(self, attn, mixed: torch.Tensor, lambda_init: float | None) -> torch.Tensor | None:
        """The factor ``[r, 1]`` the layer applies to a head's mixed values ``mixed`` [r, w] before the
        output projection, or None when it applies none."""
        return None

    def final_norm(self, model) -> torch.nn.Module:
        """The norm between the last decoder layer and the output head."""
        return model.base_model.norm

    def lambdas(self, model) -> tuple[list[float], list[float]] | None:
        """λ and λ_init per layer, or None for an architecture without λ."""
        return None

    def kv_head(self, head: int) -> int:
        """The KV head whose values map head ``head`` mixes (``repeat_kv``: query head h reads h // groups)."""
        return head // self.shape.groups
