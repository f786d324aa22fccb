"""Memory estimates checked before work starts, so a huge request gets a message instead of an
out-of-memory crash that would take every other user's session down with it."""

from __future__ import annotations

import os

from .trace.architectures import architecture_of

BUDGET_ENV = "DIFFLLAMA_LENS_MEMORY_BUDGET_GB"
DEFAULT_BUDGET_GB = 6.0  # per request; leaves room for several requests and the cached models on 24 GB
QK_CACHE_ENV = "DIFFLLAMA_LENS_QK_CACHE_GB"
DEFAULT_QK_CACHE_GB = 0.5  # per trace: every layer's queries of a 12 × 1024 model at 4K tokens (0.2 GB), with room for values and pooled maps


class MemoryBudgetError(ValueError):
    """A request whose estimated memory is above the configured budget."""


def budget_bytes() -> float:
    return float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_GB)) * 1e9


def _bytes_per_value(model) -> int:
    return model.dtype.itemsize


def forward_bytes(model, n: int) -> float:
    """A traced forward over ``n`` tokens: kept hidden states, keys and logits, plus the largest transient
    tensors of one layer (MLP activations, SDPA's attention scores for one layer's heads)."""
    config = model.config
    width = _bytes_per_value(model)
    shape = architecture_of(config).shape
    kept = (config.num_hidden_layers + 1) * n * config.hidden_size * width + config.num_hidden_layers * shape.key_bytes(n)
    outputs = config.vocab_size if hasattr(model, "lm_head") else max(config.num_labels, 2)
    logits = n * outputs * 4
    transient = 3 * n * config.intermediate_size * width + config.num_attention_heads * n * min(n, 1024) * 4
    return kept + logits + transient


def generation_bytes(model, prompt_tokens: int, new_tokens: int) -> float:
    """The KV cache and per-step logits of a generation, plus the trace over the finished sequence."""
    config = model.config
    total = prompt_tokens + new_tokens
    shape = architecture_of(config).shape
    cache = shape.kv_cache_bytes(config.num_hidden_layers, total, _bytes_per_value(model))
    return cache + forward_bytes(model, total)


def map_bytes(rows: int, n: int) -> float:
    """``rows`` query rows over ``n`` keys, float32, with the softmax working copy."""
    return 3 * rows * n * 4


def check(estimate: float, what: str, reduce: str) -> None:
    """Refuse above the budget, saying what to reduce."""
    budget = budget_bytes()
    if estimate > budget:
        raise MemoryBudgetError(f"{what} would need about {estimate / 1e9:.1f} GB, above this server's budget of "
                                f"{budget / 1e9:.1f} GB per request; {reduce}")


def qk_cache_bytes() -> float:
    """Bytes of queries (and values, pooled maps) one trace may keep for reuse (every layer's, up to this
    bound); the keys come with the trace's forward pass."""
    return float(os.environ.get(QK_CACHE_ENV, DEFAULT_QK_CACHE_GB)) * 1e9
