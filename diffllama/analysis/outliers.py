"""Activation outliers, the paper's Table 5: exact top-k and median of |attention logits| and
|hidden states|, streamed so that nothing of size layers × heads × N × N is held; each layer's part
of a stream runs in the worker threads of ``passes.per_layer`` (one core each) and the layers'
summaries are merged."""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable, Iterator

import torch

from ..records import OutlierStats
from ..trace import Trace
from .passes import per_layer

OUTLIER_RANKS = (1, 2, 3, 10, 100)
HALF = 1 << 16  # a float32 bit pattern is split into its upper and lower 16 bits
COARSE_BINS = HALF // 2  # upper 16 bits of a non-negative float: the sign bit is 0
INFINITE = 0x7F80  # the coarse bin of +inf; every bin from here on holds inf or NaN
SAMPLE_SHARE = 64  # the window guess reads about 1/64 of the values (at least SAMPLE_VALUES)
SAMPLE_VALUES = 1 << 18
WINDOW_QUANTILES = 0.005  # the window spans the sample's quantiles 0.5 ± this, plus WINDOW_MARGIN bins each side
WINDOW_MARGIN = 2
WINDOW_BINS = 33  # at most: its fine counts are WINDOW_BINS × 2^16 int64 (17 MB)
PIECE = 1 << 20  # values a summary reads at once: its scratch buffers (13 bytes a value) stay small


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

    With a ``window`` of coarse bins ``[lo, hi)`` guessed beforehand (``exact_summary``), pass 1 also
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
        self._buffers: dict[str, torch.Tensor] = {}

    def add(self, chunk: torch.Tensor) -> None:
        """Pass 1: per value its magnitude, its coarse bin and that bin's count; with a window, also a
        test of the bin (three integer operations) and the few values inside it counted by their lower
        bits. Every per-value result goes into buffers kept from chunk to chunk: a fresh tensor of a
        few MB per operation costs as much in page faults as the operation."""
        for piece in chunk.detach().reshape(-1).split(PIECE):
            self._add_piece(piece.float())

    def _scratch(self, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < like.numel() or buffer.device != like.device:
            buffer = self._buffers[name] = torch.empty(max(like.numel(), PIECE), dtype=dtype, device=like.device)
        return buffer[:like.numel()]

    def _add_piece(self, values: torch.Tensor) -> None:
        bits = torch.abs(values, out=self._scratch("bits", values, torch.float32)).view(torch.int32)
        upper = torch.bitwise_right_shift(bits, 16, out=self._scratch("upper", values, torch.int32))
        counts = torch.bincount(upper, minlength=COARSE_BINS)[:INFINITE].cpu()
        self.coarse[:INFINITE] += counts
        self.count += int(counts.sum())
        self._add_top(bits)
        if self.window and int(counts[self.window[0]:self.window[1]].sum()):
            lo, hi = self.window
            radius = (hi - lo) // 2
            distance = torch.sub(upper, lo + radius, out=self._scratch("distance", values, torch.int32)).abs_()
            inside = bits[torch.le(distance, radius, out=self._scratch("inside", values, torch.bool))]  # lo <= upper < hi
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

    def fine_counts(self, chunk: torch.Tensor) -> torch.Tensor:
        """Pass 2's counts ``[2^16]`` of one chunk, once pass 1 has seen every value: the lower bits
        of its values in the median's coarse bin. Reads this summary only (threads may share it)."""
        upper, _ = self._median_position()
        bits = _bits(chunk)
        return torch.bincount(bits[(bits >> 16) == upper] & (HALF - 1), minlength=HALF).cpu()

    def add_fine(self, chunk: torch.Tensor) -> None:
        """Pass 2."""
        self.fine += self.fine_counts(chunk)

    def completed(self, chunks: Callable[[], Iterable[torch.Tensor]]) -> "MagnitudeSummary":
        """This summary, after pass 2 over ``chunks()`` (the stream pass 1 saw) unless it is complete."""
        if not self.complete:
            for chunk in chunks():
                self.add_fine(chunk)
        return self

    @classmethod
    def merged(cls, parts: Iterable["MagnitudeSummary"]) -> "MagnitudeSummary":
        """One summary of the streams of ``parts`` (summaries with the same window, or none)."""
        total = None
        for part in parts:
            total = total or cls(part.window)
            if part.window != total.window:
                raise ValueError(f"summaries with different windows do not merge: {part.window} and {total.window}")
            top = torch.cat([total.top, part.top])
            total.top = top.topk(min(max(OUTLIER_RANKS), top.numel())).values
            total.count += part.count
            total.coarse += part.coarse
            total.fine += part.fine
            total.window_counts += part.window_counts
        return total or cls()

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


def softmax_heads(trace: Trace) -> int:
    """Softmax heads of each layer: both maps of a differential head."""
    return trace.architecture.shape.heads


def layer_logits(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """|Scaled pre-softmax q·k| of one layer's softmax heads and causal (query, key) pairs, in
    blocks of query rows."""
    yield from trace.causal_logits(layer)


def layer_output(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """A decoder layer's output ``[1, N, D]``: the trace's hidden state after it (the last one before
    the final norm)."""
    yield trace.hidden_states[layer + 1]


def logit_sample(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """The logits of evenly spaced query rows of a layer, about 1/64 of them over all layers (−inf
    after each row's own position: not values)."""
    n = trace.seq_len
    total = trace.num_layers * softmax_heads(trace) * n * (n + 1) // 2
    wanted = min(total, max(total // SAMPLE_SHARE, SAMPLE_VALUES))
    stride = max(1, total // wanted)  # a row sees (row + 1) keys, N/2 on average over evenly spaced rows
    yield trace.logit_rows(layer, torch.arange(min(stride // 2, n - 1), n, stride), list(range(softmax_heads(trace))))


def output_sample(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """Every 64th token's values of a decoder layer's output (every token's, at least 16 of them)."""
    output = trace.hidden_states[layer + 1]
    yield output.reshape(-1, output.shape[-1])[::min(SAMPLE_SHARE, max(1, trace.seq_len // 16))]


LayerStream = Callable[[Trace, int], Iterable[torch.Tensor]]
STREAMS: dict[str, tuple[LayerStream, LayerStream]] = {  # OutlierStats field: (a layer's values, a sample of them)
    "attention_logits": (layer_logits, logit_sample),
    "hidden_states": (layer_output, output_sample),
}


def layer_pass(trace: Trace, stream: LayerStream, window: tuple[int, int] | None = None) -> MagnitudeSummary:
    """Pass 1 over every layer's ``stream``, the layers in worker threads (``per_layer``), each
    thread adding into a summary of its own (and reusing its buffers); those merged."""
    summaries: dict[int, MagnitudeSummary] = {}  # by thread: each thread writes only its own

    def one_layer(layer: int) -> None:
        thread = threading.get_ident()
        if thread not in summaries:
            summaries[thread] = MagnitudeSummary(window)
        for chunk in stream(trace, layer):
            summaries[thread].add(chunk)

    for _ in per_layer(trace, one_layer):
        pass
    return MagnitudeSummary.merged(summaries.values())


def exact_summary(trace: Trace, stream: LayerStream, sample: LayerStream) -> MagnitudeSummary:
    """The exact summary of every layer's ``stream``: a window guessed from ``sample``, so that one
    pass usually gives the median; pass 2 (the same threads) only when it falls outside."""
    summary = layer_pass(trace, stream, window_around(layer_pass(trace, sample)))
    if not summary.complete:
        for fine in per_layer(trace, lambda layer: sum(summary.fine_counts(chunk) for chunk in stream(trace, layer))):
            summary.fine += fine
    return summary


def outlier_streams(trace: Trace) -> dict[str, Callable[[], Iterator[torch.Tensor]]]:
    """The two streams Table 5 summarises, by ``OutlierStats`` field name, each replayable (a fresh
    iterator over every layer per call)."""
    def replayable(stream: LayerStream) -> Callable[[], Iterator[torch.Tensor]]:
        return lambda: (chunk for layer in range(trace.num_layers) for chunk in stream(trace, layer))

    return {name: replayable(stream) for name, (stream, _) in STREAMS.items()}


def activation_outliers(trace: Trace) -> OutlierStats:
    """|pre-softmax attention logits| and |hidden states| of ``trace`` summarised as Table 5, each
    in one pass over every layer (a second only when the median falls outside the window guessed)."""
    return OutlierStats(**{name: exact_summary(trace, stream, sample).as_row() for name, (stream, sample) in STREAMS.items()})
