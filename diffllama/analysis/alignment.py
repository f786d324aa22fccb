"""Characters ↔ tokens: the token span covering some characters, and the tokens of two
tokenisations of one text that share characters. Spans are compared across models this way."""

from __future__ import annotations

from ..records import TokenAlignment
from ..trace import Trace


def token_spans(trace: Trace, char_start: int, char_end: int, sequence: int | None = None) -> tuple[int, int]:
    """The token span ``[s, e)`` whose characters overlap ``[char_start, char_end)`` (in the text
    whose sequence id is ``sequence``, or any non-special token when None)."""
    hits = [i for i, ((a, b), seq) in enumerate(zip(trace.offsets, trace.sequence_ids))
            if seq is not None and (sequence is None or seq == sequence) and a < char_end and b > char_start]
    if not hits:
        raise ValueError(f"no token covers characters {char_start}..{char_end}: the span lies outside the part of the "
                         "input this trace read (another window of a long input, or past the model's positions)")
    return hits[0], hits[-1] + 1


def align_tokens(trace_a: Trace, trace_b: Trace) -> TokenAlignment:
    """Map tokens of A to tokens of B (and back) that share characters of the same input text."""

    def overlaps(source: Trace, target: Trace) -> list[list[int]]:
        spans = [(i, a, b, s) for i, ((a, b), s) in enumerate(zip(target.offsets, target.sequence_ids)) if s is not None and b > a]
        return [[i for i, a, b, s in spans if s == seq and a < end and b > start] if seq is not None and end > start else []
                for (start, end), seq in zip(source.offsets, source.sequence_ids)]

    return TokenAlignment(a_to_b=overlaps(trace_a, trace_b), b_to_a=overlaps(trace_b, trace_a))
