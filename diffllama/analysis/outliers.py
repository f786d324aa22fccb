"""Activation outliers, the paper's Table 5: exact top-k and median of |attention logits| and
|hidden states|, streamed so that nothing of size layers × heads × N × N is held."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch

from ..records import OutlierStats
from ..trace import Trace

OUTLIER_RANKS = (1, 2, 3, 10, 100)
HALF = 1 << 16  # a float32 bit pattern is split into its upper and lower 16 bits
COARSE_BINS = HALF // 2  # upper 16 bits of a non-negative float: the sign bit is 0
INFINITE = 0x7F80  # the coarse bin of +inf; every bin from here on holds inf or NaN
SAMPLE_SHARE = 64  # the window guess reads about 1/64 of the logits (at least SAMPLE_VALUES)
SAMPLE_VALUES = 1 << 18
WINDOW_QUANTILES = 0.005  # the window spans the sample's quantiles 0.5 ± this, plus WINDOW_MARGIN bins each side
WINDOW_MARGIN = 2
WINDOW_BINS = 33  # at most: its fine counts are WINDOW_BINS × 2^16 int64 (17 MB)


def _bits(chunk: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns [n] (int32, on the chunk's device) of |chunk|: for non-negative floats
    they order exactly like the values."""
    return chunk.detach().float().abs().reshape(-1).view(torch.int32)


class MagnitudeSummary:
    """Exact top-k and median of the finite |values| of a stream of chunks (infinities, such as the
    −inf of masked logits, are not values), in bounded memory.

    A value is counted by its float32 bit pattern. Pass 1 (``add``) keeps the k largest values and
    counts every value by the upper 16 bits of its pattern (a coarse bin); that finds the bin holding
    the median's rank. Pass 2 (``add_fine``) counts the lower 16 bits of the values in that bin,
    which fixes the median's exact bit pattern. Summaries of disjoint streams combine by ``merged``
    (counts add), so several processes give the same numbers as one.

    With a ``window`` of coarse bins ``[lo, hi)`` guessed beforehand (``logit_summary``), pass 1 also
    counts the lower bits of the values inside it: when the median's bin lies there, the summary is
    ``complete`` after one pass and pass 2 is skipped. The window holds an odd number of bins (a
    centre and a radius: one comparison per value fewer)."""

    def __init__(self, window: tuple[int, int] | None = None):
        if window and (window[1] - window[0]) % 2 == 0:
            raise ValueError(f"a window holds an odd number of coarse bins; got {window}")
        self.top = torch.empty(0)  # sorted, largest first, at most max(OUTLIER_RANKS)
        self.count = 0
        self.coarse = torch.zeros(COARSE_BINS, dtype=torch.long)
        self.fine = torch.zeros(HALF, dtype=torch.long)
        self.window = window
        self.window_counts = torch.zeros((window[1] - window[0]) * HALF if window else 0, dtype=torch.long)  # [bin - lo, low bits]

    def add(self, chunk: torch.Tensor) -> None:
        """Pass 1."""
        bits = _bits(chunk)
        upper = bits >> 16
        counts = torch.bincount(upper, minlength=COARSE_BINS)[:INFINITE].cpu()
        self.coarse[:INFINITE] += counts
        self.count += int(counts.sum())
        self._add_top(bits)
        if self.window and int(counts[self.window[0]:self.window[1]].sum()):
            lo, hi = self.window
            radius = (hi - lo) // 2
            inside = bits[(upper - (lo + radius)).abs_() <= radius]  # lo <= upper < hi in two passes, not three
            self.window_counts.index_add_(0, (inside - (lo << 16)).cpu(), torch.ones(len(inside), dtype=torch.long))

    def _add_top(self, bits: torch.Tensor) -> None:
        keep = max(OUTLIER_RANKS)
        threshold = int(self.top[-1:].view(torch.int32)) if self.top.numel() == keep else -1
        largest = int(bits.max()) if bits.numel() else -1
        if largest <= threshold:  # only values above the current k-th largest can enter: usually none
            return
        wanted = bits > threshold
        if largest >= INFINITE << 16:
            wanted &= bits < INFINITE << 16
        bits = bits[wanted]
        if bits.numel():
            candidates = torch.cat([self.top, bits.topk(min(keep, bits.numel())).values.view(torch.float32).cpu()])
            self.top = candidates.topk(min(keep, candidates.numel())).values

    def _median_position(self) -> tuple[int, int]:
        """(upper-bits bin of the median, its rank among that bin's values). torch.median takes the
        lower middle value of an even count; so does this, for equal answers."""
        if self.count == 0:
            raise ValueError("nothing to summarise: the input is empty")
        rank = (self.count - 1) // 2
        cumulative = self.coarse.cumsum(0)
        upper = int(torch.searchsorted(cumulative, torch.tensor(rank), right=True))
        return upper, rank - (int(cumulative[upper - 1]) if upper else 0)

    @property
    def complete(self) -> bool:
        """Whether the median is known without pass 2 (its bin lies in the window)."""
        return bool(self.window) and self.window[0] <= self._median_position()[0] < self.window[1]

    def add_fine(self, chunk: torch.Tensor) -> None:
        """Pass 2, once pass 1 has seen every value."""
        upper, _ = self._median_position()
        bits = _bits(chunk)
        self.fine += torch.bincount(bits[(bits >> 16) == upper] & (HALF - 1), minlength=HALF).cpu()

    def completed(self, chunks: Callable[[], Iterable[torch.Tensor]]) -> "MagnitudeSummary":
        """This summary, after pass 2 over ``chunks()`` (the stream pass 1 saw) unless it is complete."""
        if not self.complete:
            for chunk in chunks():
                self.add_fine(chunk)
        return self

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
        return summary.completed(chunks)

    def median(self) -> float:
        upper, rank = self._median_position()
        if self.complete:
            start = (upper - self.window[0]) * HALF
            fine = self.window_counts[start:start + HALF]
        else:
            fine = self.fine
        lower = int(torch.searchsorted(fine.cumsum(0), torch.tensor(rank), right=True))
        if lower >= HALF:
            raise ValueError("the second pass has not seen the values of the first: run add_fine over the same stream")
        return float(torch.tensor([upper << 16 | lower], dtype=torch.int32).view(torch.float32))

    def as_row(self) -> dict[str, float]:
        row = {f"top-{k}": float(self.top[k - 1]) if k <= self.top.numel() else math.nan for k in OUTLIER_RANKS}
        row["median"] = self.median()
        return row


def window_around(sample: MagnitudeSummary) -> tuple[int, int]:
    """Coarse bins ``[lo, hi)`` around the median of ``sample`` (pass 1 over a sample of the stream),
    wide enough that the whole stream's median falls inside unless the sample is far off."""
    cumulative = sample.coarse.cumsum(0)
    bin_at = lambda share: int(torch.searchsorted(cumulative, torch.tensor(int(share * sample.count)), right=True))  # noqa: E731
    lo, hi = bin_at(0.5 - WINDOW_QUANTILES) - WINDOW_MARGIN, bin_at(0.5 + WINDOW_QUANTILES) + WINDOW_MARGIN + 1
    if hi - lo > WINDOW_BINS:  # a spread-out sample: the bins nearest its median
        lo = bin_at(0.5) - WINDOW_BINS // 2
        hi = lo + WINDOW_BINS
    lo, hi = max(lo, 0), min(hi, INFINITE)
    return (lo, hi) if (hi - lo) % 2 else (lo, hi + 1) if hi < INFINITE else (lo - 1, hi)  # an odd number of bins


def logit_summary(trace: Trace) -> MagnitudeSummary:
    """An empty summary for ``trace``'s attention logits (``logit_chunks``) with its window guessed
    from the logits of evenly spaced query rows (about 1/64 of the values), so that one pass over the
    logits usually gives the exact median."""
    heads = trace._model.config.num_attention_heads  # softmax heads: both maps of a differential head
    n = trace.seq_len
    total = trace.num_layers * heads * n * (n + 1) // 2
    wanted = min(total, max(total // SAMPLE_SHARE, SAMPLE_VALUES))
    stride = max(1, total // wanted)  # a row sees (row + 1) keys, N/2 on average over evenly spaced rows
    rows = torch.arange(min(stride // 2, n - 1), n, stride)
    sample = MagnitudeSummary()
    for layer in range(trace.num_layers):
        sample.add(trace.logit_rows(layer, rows, list(range(heads))))  # [H, r, N]; −inf after each row's own position
    return MagnitudeSummary(window_around(sample))


def logit_chunks(trace: Trace) -> Iterator[torch.Tensor]:
    """|Scaled pre-softmax q·k| of every layer, softmax head (both maps of a differential head) and
    causal (query, key) pair, in blocks of query rows."""
    for layer in range(trace.num_layers):
        yield from trace.causal_logits(layer)


def hidden_chunks(trace: Trace) -> Iterator[torch.Tensor]:
    """Every decoder layer's output ``[1, N, D]``: the trace's hidden states after the first (the
    embeddings), the last one before the final norm."""
    yield from trace.hidden_states[1:]


def outlier_streams(trace: Trace) -> dict[str, Callable[[], Iterator[torch.Tensor]]]:
    """The two replayable streams Table 5 summarises, by ``OutlierStats`` field name."""
    return {"attention_logits": lambda: logit_chunks(trace), "hidden_states": lambda: hidden_chunks(trace)}


def activation_outliers(trace: Trace) -> OutlierStats:
    """|pre-softmax attention logits| and |hidden states| of ``trace`` summarised as Table 5: the
    logits in one pass (a second only when the median falls outside the window ``logit_summary``
    guessed)."""
    streams = outlier_streams(trace)
    logits = logit_summary(trace)
    for chunk in streams["attention_logits"]():
        logits.add(chunk)
    return OutlierStats(attention_logits=logits.completed(streams["attention_logits"]).as_row(),
                        hidden_states=MagnitudeSummary.exact(streams["hidden_states"]).as_row())
