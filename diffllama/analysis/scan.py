"""One pass over every layer's maps that several measures read at once (head statistics and sink
scores): a layer's logits and softmaxes are computed once for all of them.

A reader is called with ``(layer, block)`` and accumulates what it measures."""

from __future__ import annotations

from typing import Callable

from ..tracing import Block, Trace

Reader = Callable[[int, Block], None]


def scan(trace: Trace, kind: str, rows: list[int] | None = None, *, maps: Reader | None = None,
         softmax: Reader | None = None, layers: list[int] | None = None) -> None:
    """Compute the maps of ``kind`` of every head at the query positions ``rows`` (all by default) in
    ``layers`` (all by default), block by block, handing each block to the readers: ``maps`` the
    map (D for ``diff``), ``softmax`` the softmax maps before D is formed (``Trace.map_blocks``)."""
    for layer in range(trace.num_layers) if layers is None else layers:
        hook = None if softmax is None else lambda block, layer=layer: softmax(layer, block)
        for block in trace.map_blocks(layer, kind, rows=rows, softmax=hook):
            if maps is not None:
                maps(layer, block)
