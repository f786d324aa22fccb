"""Activation outliers, the paper's Table 5: exact top-k and median of |attention logits| and
|hidden states|, streamed so that nothing of size layers × heads × N × N is held; each layer's part
of a stream runs in the worker threads of ``passes.per_layer`` (one core each) and the layers'
summaries are merged."""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable, Iterator, Union

import numpy as np
import torch

from ..records import OutlierStats
from ..trace import Block, Trace
from .magnitude_counts import Counts, finite_patterns
from .passes import per_layer

OUTLIER_RANKS = (1, 2, 3, 10, 100)
HALF = 1 << 16  # a float32 bit pattern is split into its upper and lower 16 bits
COARSE_BINS = HALF // 2  # upper 16 bits of a non-negative float: the sign bit is 0
SAMPLE_VALUES = 1 << 17  # the window guess reads about this many logits (and hidden-state values), drawn uniformly
WINDOW_QUANTILES = 0.006  # the window spans the sample's quantiles 0.5 ± this (≈ 4.3 standard errors of a sample median's rank, 0.5 / √SAMPLE_VALUES)
WINDOW_PATTERNS = 1 << 21  # at most: its counts are this many int64 (16 MB)

Chunk = Union[Block, torch.Tensor]  # a block of causal logits (row i: keys 0..rows[i]) or any values


def _rows(chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk as the counting passes read it: values ``[h, r, e]`` and how many of each row's are values."""
    if isinstance(chunk, Block):
        return chunk.values, chunk.rows + 1
    flat = chunk.detach().reshape(1, 1, -1)
    return flat, torch.tensor([flat.shape[-1]])


class MagnitudeSummary:
    """Exact top-k and median of the finite |values| of a stream of chunks (infinities, such as the
    −inf of masked logits, are not values), in bounded memory. A value is counted by its float32 bit
    pattern (``magnitude_counts``: each chunk read once).

    Without a window, pass 1 (``add``) keeps the k largest values and counts every value by the upper
    16 bits of its pattern (a coarse bin); that finds the bin holding the median's rank. Pass 2
    (``add_fine``) counts the values in that bin by their whole pattern, which fixes the median.
    Summaries of disjoint streams combine by ``merged`` (counts add), so several processes give the
    same numbers as one.

    With a ``window`` of patterns ``[lo, hi)`` guessed beforehand from a sample (``exact_summary``),
    pass 1 counts the values below it and each value inside it by its pattern: when the median's rank
    falls inside, the summary is ``complete`` after one pass; when it does not, ``completed``
    summarises the stream again without a window."""

    def __init__(self, window: tuple[int, int] | None = None):
        self.window = window
        self.counts = Counts(max(OUTLIER_RANKS))
        self.coarse = np.zeros(0 if window else COARSE_BINS, dtype=np.int64)
        self.fine = np.zeros(HALF, dtype=np.int64)  # pass 2: the median's coarse bin, by pattern
        self.window_counts = np.zeros(window[1] - window[0] if window else 0, dtype=np.int64)  # [pattern − lo]

    @property
    def count(self) -> int:
        """The finite values counted."""
        return int(self.counts.totals[2])

    @property
    def top(self) -> torch.Tensor:
        """The k largest magnitudes, descending."""
        return self.counts.largest()

    def add(self, chunk: Chunk) -> None:
        """Pass 1 over one chunk."""
        values, ends = _rows(chunk)
        if self.window:
            self.counts.window_pass(values, ends, *self.window, self.window_counts)
        else:
            self.counts.coarse_pass(values, ends, self.coarse)

    def _median_rank(self) -> int:
        """torch.median takes the lower middle value of an even count; so does this, for equal answers."""
        if self.count == 0:
            raise ValueError("nothing to summarise: the input is empty")
        return (self.count - 1) // 2

    def _median_bin(self) -> tuple[int, int]:
        """(coarse bin of the median, its rank among that bin's values): a summary without a window."""
        rank = self._median_rank()
        cumulative = self.coarse.cumsum()
        upper = int(np.searchsorted(cumulative, rank, side="right"))
        return upper, rank - (int(cumulative[upper - 1]) if upper else 0)

    @property
    def complete(self) -> bool:
        """Whether the median is known without another pass (its rank falls inside the window)."""
        below, inside = int(self.counts.totals[0]), int(self.counts.totals[1])
        return bool(self.window) and below <= self._median_rank() < below + inside

    def fine_counts(self, chunk: Chunk) -> np.ndarray:
        """Pass 2's counts ``[2^16]`` of one chunk, once pass 1 (without a window) has seen every value:
        its values in the median's coarse bin, by their lower 16 bits. Reads this summary only
        (threads may share it)."""
        upper, _ = self._median_bin()
        fine = np.zeros(HALF, dtype=np.int64)
        Counts(0).window_pass(*_rows(chunk), upper << 16, (upper + 1) << 16, fine)
        return fine

    def add_fine(self, chunk: Chunk) -> None:
        """Pass 2."""
        self.fine += self.fine_counts(chunk)

    def completed(self, chunks: Callable[[], Iterable[Chunk]]) -> "MagnitudeSummary":
        """A summary of ``chunks()`` (the stream pass 1 saw) whose median is known: this one after pass 2;
        with a window, this one when it is complete, else a summary of the stream without a window."""
        if self.window is None:
            for chunk in chunks():
                self.add_fine(chunk)
            return self
        return self if self.complete else MagnitudeSummary.exact(chunks)

    @classmethod
    def merged(cls, parts: Iterable["MagnitudeSummary"]) -> "MagnitudeSummary":
        """One summary of the streams of ``parts`` (summaries with the same window, or none)."""
        total = None
        for part in parts:
            total = total or cls(part.window)
            if part.window != total.window:
                raise ValueError(f"summaries with different windows do not merge: {part.window} and {total.window}")
            total.counts.merge(part.counts)
            total.coarse += part.coarse
            total.fine += part.fine
            total.window_counts += part.window_counts
        return total or cls()

    @classmethod
    def exact(cls, chunks: Callable[[], Iterable[Chunk]]) -> "MagnitudeSummary":
        """Both passes over a replayable stream (``chunks()`` returns a fresh iterator each call)."""
        summary = cls()
        for chunk in chunks():
            summary.add(chunk)
        return summary.completed(chunks)

    def median(self) -> float:
        if self.window:
            if not self.complete:
                raise ValueError("the window missed the median: summarise the stream again (completed)")
            lo, rank = self.window[0], self._median_rank() - int(self.counts.totals[0])
            pattern = lo + int(np.searchsorted(self.window_counts.cumsum(), rank, side="right"))
        else:
            upper, rank = self._median_bin()
            lower = int(np.searchsorted(self.fine.cumsum(), rank, side="right"))
            if lower >= HALF:
                raise ValueError("the second pass has not seen the values of the first: run add_fine over the same stream")
            pattern = upper << 16 | lower
        return float(np.array([pattern], dtype=np.int32).view(np.float32)[0])

    def as_row(self) -> dict[str, float]:
        top = self.top
        row = {f"top-{k}": float(top[k - 1]) if k <= top.numel() else math.nan for k in OUTLIER_RANKS}
        row["median"] = self.median()
        return row


def window_around(patterns: np.ndarray) -> tuple[int, int]:
    """Patterns ``[lo, hi)`` around the median of a sample's finite magnitudes (``patterns``: their bit
    patterns): its quantiles 0.5 ± ``WINDOW_QUANTILES``, wide enough that the whole stream's median falls
    inside unless the sample is far off; at most ``WINDOW_PATTERNS`` (then centred on its median)."""
    if not patterns.size:
        return 0, 1
    ranks = [int(share * (patterns.size - 1)) for share in (0.5 - WINDOW_QUANTILES, 0.5, 0.5 + WINDOW_QUANTILES)]
    lo, middle, hi = (int(p) for p in np.partition(patterns, ranks)[ranks])
    if hi + 1 - lo > WINDOW_PATTERNS:  # a spread-out sample: the patterns nearest its median
        lo = max(0, middle - WINDOW_PATTERNS // 2)
        return lo, lo + WINDOW_PATTERNS
    return lo, hi + 1


def sample_patterns(trace: Trace, sample: LayerStream) -> np.ndarray:
    """The finite magnitudes' bit patterns of every layer's ``sample``, the layers in worker threads."""
    parts = per_layer(trace, lambda layer: [finite_patterns(chunk) for chunk in sample(trace, layer)])
    return np.concatenate([patterns for part in parts for patterns in part] or [np.zeros(0, dtype=np.int32)])


def softmax_heads(trace: Trace) -> int:
    """Softmax heads of each layer: both maps of a differential head."""
    return trace.architecture.shape.heads


def layer_logits(trace: Trace, layer: int) -> Iterator[Block]:
    """Scaled pre-softmax q·k of one layer's softmax heads and causal (query, key) pairs, in blocks
    of heads × query rows."""
    yield from trace.causal_logits(layer)


def layer_output(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """A decoder layer's output ``[1, N, D]``: the trace's hidden state after it (the last one before
    the final norm)."""
    yield trace.hidden_states[layer + 1]


def _draws(trace: Trace, layer: int) -> tuple[torch.Generator, int]:
    """A layer's seeded generator and its share of ``SAMPLE_VALUES`` (all layers give about that many)."""
    return torch.Generator().manual_seed(layer), max(1, SAMPLE_VALUES // trace.num_layers)


def logit_sample(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """Logits of a layer at causal (query, key) pairs and softmax heads drawn uniformly (seeded): a sample of
    the stream ``layer_logits`` whose quantiles estimate the stream's. Pairs from a few whole rows would not
    do: rows differ, so a few rows' median misses the stream's by more than the window allows."""
    generator, count = _draws(trace, layer)
    n = trace.seq_len
    pair = torch.randint(n * (n + 1) // 2, (count,), generator=generator)  # pair t: row i, key t − i(i+1)/2
    row = ((torch.sqrt(8 * pair.double() + 1) - 1) / 2).long()
    row += ((row + 1) * (row + 2) // 2 <= pair).long() - (row * (row + 1) // 2 > pair).long()  # past float rounding
    heads = torch.randint(softmax_heads(trace), (count,), generator=generator)
    yield trace.logits_at(layer, heads, row, pair - row * (row + 1) // 2)


def output_sample(trace: Trace, layer: int) -> Iterator[torch.Tensor]:
    """Values of a decoder layer's output at positions drawn uniformly (seeded). Every k-th value would read
    only some hidden dimensions when k shares a factor with the hidden size, and a few dimensions hold the
    outliers."""
    generator, count = _draws(trace, layer)
    output = trace.hidden_states[layer + 1].reshape(-1)
    yield output[torch.randint(output.numel(), (count,), generator=generator).to(output.device)]


LayerStream = Callable[[Trace, int], Iterable[Chunk]]
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
    summary = layer_pass(trace, stream, window_around(sample_patterns(trace, sample)))
    if summary.complete:
        return summary
    summary = layer_pass(trace, stream)  # the window missed: every value by its coarse bin, then the median's bin
    for fine in per_layer(trace, lambda layer: sum(summary.fine_counts(chunk) for chunk in stream(trace, layer))):
        summary.fine += fine
    return summary


def outlier_streams(trace: Trace) -> dict[str, Callable[[], Iterator[Chunk]]]:
    """The two streams Table 5 summarises, by ``OutlierStats`` field name, each replayable (a fresh
    iterator over every layer per call)."""
    def replayable(stream: LayerStream) -> Callable[[], Iterator[Chunk]]:
        return lambda: (chunk for layer in range(trace.num_layers) for chunk in stream(trace, layer))

    return {name: replayable(stream) for name, (stream, _) in STREAMS.items()}


def activation_outliers(trace: Trace) -> OutlierStats:
    """|pre-softmax attention logits| and |hidden states| of ``trace`` summarised as Table 5, each
    in one pass over every layer (a second only when the median falls outside the window guessed)."""
    return OutlierStats(**{name: exact_summary(trace, stream, sample).as_row() for name, (stream, sample) in STREAMS.items()})
