"""Persimmon: one softmax map per head, no GQA, head_dim = hidden / heads (its attention ignores a
``head_dim`` in the config), fused QKV and LayerNorm on Q and K (inside the module the trace runs),
output projection ``dense`` with a bias (added once per token: no key's contribution)."""

from .base import Architecture, AttentionShape


class Persimmon(Architecture):
    name = "persimmon"
    class_prefix = "Persimmon"

    @classmethod
    def attention_shape(cls, config) -> AttentionShape:
        heads = config.num_attention_heads
        return AttentionShape(heads, heads, config.hidden_size // heads, heads, cls.value_calls)

    def output_projection(self, attn):
        return attn.dense

    def final_norm(self, model):
        return model.base_model.final_layernorm
