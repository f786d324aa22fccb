"""Logit lens: what the residual stream predicts after each layer, read at the last position through
the model's own final norm and output head (the last entry is exactly the model's output)."""

from __future__ import annotations

import torch

from ..trace import Trace, architecture_of
from .core import answer_change, require_language_model, token_name
from .records import LogitLens


def final_norm(model) -> torch.nn.Module:
    """The norm before the output head, as the model's architecture names it."""
    return architecture_of(model.config).final_norm(model)


@torch.no_grad()
def lens_logits(lens, trace: Trace, position: int) -> torch.Tensor:
    """``[L + 1, V]`` logits (float32, CPU) of every entry of the residual stream at ``position``:
    the embeddings, then each decoder layer's output (the trace keeps the last one before the norm)."""
    stream = torch.stack([hidden[0, position] for hidden in trace.hidden_states])  # [L + 1, D]
    return lens.model.get_output_embeddings()(final_norm(lens.model)(stream)).float().cpu()


def logit_lens(lens, trace: Trace, token_id: int | None = None) -> LogitLens:
    """The answer's probability and rank per layer at the last position (``token_id``; the model's own
    prediction when None), and the layer where it emerges."""
    require_language_model(lens, "the logit lens")
    position = trace.seq_len - 1
    logits = lens_logits(lens, trace, position)
    final = logits[-1]
    reads = [answer_change(lens, final, row, token_id, position) for row in logits]
    answer = reads[0]
    tops = logits.argmax(-1).tolist()
    probabilities = torch.softmax(logits, -1)
    rank = [read.rank[1] for read in reads]
    emergence = None
    for entry in range(len(rank) - 1, -1, -1):  # the first entry of the final run of top-1s
        if rank[entry] != 1:
            break
        emergence = entry
    return LogitLens(answer=answer.token, answer_id=answer.token_id, position=position,
                     probability=[read.probability[1] for read in reads], rank=rank,
                     top=[token_name(lens, t) for t in tops],
                     top_probability=[float(probabilities[i, t]) for i, t in enumerate(tops)], emergence=emergence)
