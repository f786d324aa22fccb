"""Activation outliers, the paper's Table 5: exact top-k and median of |attention logits| and
|hidden states|, streamed so that nothing of size layers × heads × N × N is held."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch

from ..records import OutlierStats
from ..tracing import Trace

OUTLIER_RANKS = (1, 2, 3, 10, 100)
HALF = 1 << 16  # a float32 bit pattern is split into its upper and lower 16 bits


def _bits(chunk: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns of |chunk|: for non-negative floats they order exactly like the values."""
    return chunk.detach().float().abs().reshape(-1).contiguous().view(torch.int32).long()


class MagnitudeSummary:
    """Exact top-k and median of |values| over a stream of chunks, in two passes of bounded memory.

    Pass 1 (``add``) keeps the k largest values and counts every value by the upper 16 bits of its
    float32 pattern; that finds the bin holding the median's rank. Pass 2 (``add_fine``) counts the
    lower 16 bits of the values in that bin, which fixes the median's exact bit pattern. Summaries
    of disjoint streams combine by ``merged`` (counts add), so several processes give the same
    numbers as one."""

    def __init__(self):
        self.top = torch.empty(0)  # sorted, largest first, at most max(OUTLIER_RANKS)
        self.count = 0
        self.coarse = torch.zeros(HALF // 2, dtype=torch.long)  # sign bit is 0: upper bits < 2**15
        self.fine = torch.zeros(HALF, dtype=torch.long)

    def add(self, chunk: torch.Tensor) -> None:
        """Pass 1."""
        values = chunk.detach().float().abs().reshape(-1).cpu()
        keep = max(OUTLIER_RANKS)
        top = torch.cat([self.top, values.topk(min(keep, values.numel())).values])
        self.top = top.topk(min(keep, top.numel())).values
        self.count += values.numel()
        self.coarse += torch.bincount(_bits(values) >> 16, minlength=HALF // 2)

    def _median_position(self) -> tuple[int, int]:
        """(upper-bits bin of the median, its rank among that bin's values). torch.median takes the
        lower middle value of an even count; so does this, for equal answers."""
        if self.count == 0:
            raise ValueError("nothing to summarise: the input is empty")
        rank = (self.count - 1) // 2
        cumulative = self.coarse.cumsum(0)
        upper = int(torch.searchsorted(cumulative, torch.tensor(rank), right=True))
        return upper, rank - (int(cumulative[upper - 1]) if upper else 0)

    def add_fine(self, chunk: torch.Tensor) -> None:
        """Pass 2, once pass 1 has seen every value."""
        upper, _ = self._median_position()
        bits = _bits(chunk.cpu())
        self.fine += torch.bincount(bits[(bits >> 16) == upper] & (HALF - 1), minlength=HALF)

    @classmethod
    def merged(cls, parts: Iterable["MagnitudeSummary"]) -> "MagnitudeSummary":
        total = cls()
        for part in parts:
            top = torch.cat([total.top, part.top])
            total.top = top.topk(min(max(OUTLIER_RANKS), top.numel())).values
            total.count += part.count
            total.coarse += part.coarse
            total.fine += part.fine
        return total

    @classmethod
    def exact(cls, chunks: Callable[[], Iterable[torch.Tensor]]) -> "MagnitudeSummary":
        """Both passes over a replayable stream (``chunks()`` returns a fresh iterator each call)."""
        summary = cls()
        for chunk in chunks():
            summary.add(chunk)
        for chunk in chunks():
            summary.add_fine(chunk)
        return summary

    def median(self) -> float:
        upper, rank = self._median_position()
        lower = int(torch.searchsorted(self.fine.cumsum(0), torch.tensor(rank), right=True))
        if lower >= HALF:
            raise ValueError("the second pass has not seen the values of the first: run add_fine over the same stream")
        return float(torch.tensor([upper << 16 | lower], dtype=torch.int32).view(torch.float32))

    def as_row(self) -> dict[str, float]:
        row = {f"top-{k}": float(self.top[k - 1]) if k <= self.top.numel() else math.nan for k in OUTLIER_RANKS}
        row["median"] = self.median()
        return row


@torch.no_grad()
def last_layer_output(trace: Trace) -> torch.Tensor:
    """The last decoder layer's output ``[1, N, D]`` before the final norm. transformers'
    ``hidden_states[-1]`` is taken after the norm, so the layer is run again on its stored input with
    the model's own module (causal attention, the model's rotary embedding)."""
    base = trace._model.base_model
    hidden = trace.hidden_states[-2]  # [1, N, D]: the input of the last layer
    position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
    return base.layers[trace.num_layers - 1](hidden, attention_mask=None, position_ids=position_ids,
                                             position_embeddings=base.rotary_emb(hidden, position_ids=position_ids))


def logit_chunks(trace: Trace) -> Iterator[torch.Tensor]:
    """|Scaled pre-softmax q·k| of every layer, softmax head (both maps of a differential head) and
    causal (query, key) pair, in blocks of query rows."""
    for layer in range(trace.num_layers):
        for values in trace.causal_logits(layer):
            yield values.cpu()


def hidden_chunks(trace: Trace, last: torch.Tensor) -> Iterator[torch.Tensor]:
    """Every decoder layer's output: transformers' hidden_states[1:L] are the outputs of layers
    0..L-2; ``last`` is the last layer's (``last_layer_output``)."""
    for hidden in (*trace.hidden_states[1:-1], last):
        yield hidden.float().flatten().cpu()


def outlier_streams(trace: Trace) -> dict[str, Callable[[], Iterator[torch.Tensor]]]:
    """The two replayable streams Table 5 summarises, by ``OutlierStats`` field name."""
    last = last_layer_output(trace)  # [1, N, D]: linear in N, computed once for both passes
    return {"attention_logits": lambda: logit_chunks(trace), "hidden_states": lambda: hidden_chunks(trace, last)}


def activation_outliers(trace: Trace) -> OutlierStats:
    """|pre-softmax attention logits| and |hidden states| of ``trace`` summarised as Table 5."""
    return OutlierStats(**{name: MagnitudeSummary.exact(stream).as_row() for name, stream in outlier_streams(trace).items()})
