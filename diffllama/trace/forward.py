"""The forward pass a trace keeps: tokenise, run the model once with hidden states and keys kept."""

from __future__ import annotations

import torch

from .. import budget
from .architectures import architecture_of
from .hooks import ATTENTION_IMPLEMENTATION
from .lazy import Trace


def run_trace(model, tokenizer, arch: str, text: str, text_pair: str | None = None) -> Trace:
    """Tokenise, run one forward pass with hidden states kept, and wrap it as a ``Trace``."""
    encoding = tokenizer([text], [text_pair] if text_pair is not None else None, return_offsets_mapping=True)
    return trace_encoding(model, tokenizer, arch, encoding, 0)


def trace_encoding(model, tokenizer, arch: str, encoding, index: int) -> Trace:
    """Trace sequence ``index`` of a batched tokenizer encoding (several when a long input was windowed).
    An input past the model's trained positions is refused before it gets here (``LensModel.check_input``)."""
    ids = encoding["input_ids"][index]
    special = set(tokenizer.all_special_ids)
    sequence_ids = [None if i in special else s for i, s in zip(ids, encoding.sequence_ids(index))]
    offsets = [(0, 0) if s is None else tuple(o) for s, o in zip(sequence_ids, encoding["offset_mapping"][index])]
    return trace_ids(model, tokenizer, arch, ids, offsets, sequence_ids)


@torch.no_grad()
def trace_ids(model, tokenizer, arch: str, ids: list[int], offsets, sequence_ids) -> Trace:
    """One forward pass over ``ids`` with hidden states and each layer's keys kept, wrapped as a
    ``Trace``. No key/value cache is built: the pass is never continued, and its values are not kept."""
    budget.check(budget.forward_bytes(model, len(ids)), f"a trace of {len(ids)} tokens", "shorten the input")
    config = model.config
    architecture = architecture_of(config)
    keys = [None] * config.num_hidden_layers

    def keep(layer: int, key: torch.Tensor) -> None:  # [1, KV, N, d], post-RoPE: what the logits read
        keys[layer] = key[0].float().contiguous()

    output = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True, use_cache=False,
                   lens_keys=keep)
    if any(key is None for key in keys):
        raise ValueError(f"a trace needs the model loaded with attn_implementation={ATTENTION_IMPLEMENTATION!r} (diffllama.load does)")
    lambdas = architecture.lambdas(model)
    return Trace(
        arch=arch,
        input_ids=ids,
        tokens=[tokenizer.decode([i]) for i in ids],
        offsets=offsets,
        sequence_ids=sequence_ids,
        num_layers=config.num_hidden_layers,
        num_heads=architecture.shape.map_heads,
        lambdas=lambdas[0] if lambdas else None,
        lambda_inits=lambdas[1] if lambdas else None,
        logits=task_logits(output),
        hidden_states=output.hidden_states,
        _model=model,
        keys=tuple(keys),
        architecture=architecture,
    )


def task_logits(output) -> torch.Tensor:
    if hasattr(output, "start_logits"):  # question answering: [N, 2] (start, end)
        return torch.stack([output.start_logits[0], output.end_logits[0]], dim=-1).float().cpu()
    return output.logits[0].float().cpu()
