"""One pass over every layer's maps that several measures read at once (head statistics and sink
scores): a layer's logits and softmaxes are computed once for all of them, and the layers are shared
among worker threads (``per_layer``).

A reader is called with ``(layer, block)``. Readers of different layers may run at the same time
(in different threads), so a reader writes only what belongs to its layer, or guards what it shares."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

import torch

from ..cores import one_core
from ..trace import Block, Trace

Reader = Callable[[int, Block], None]
Result = TypeVar("Result")


def scan_workers(trace: Trace) -> int:
    """Threads the layers are spread over: one per CPU core torch may use, each keeping to its core
    (``one_core``); one on a GPU (its kernels already fill the device)."""
    return 1 if trace.device.type == "cuda" else max(1, torch.get_num_threads())


def per_layer(trace: Trace, work: Callable[[int], Result], layers: list[int] | None = None,
              workers: int | None = None) -> Iterator[Result]:
    """``work(layer)`` for ``layers`` (all by default) in ``workers`` threads (``scan_workers``), each under the
    caller's context (its request's time limit), the results yielded in layer order as they are
    ready. A caller that stops early leaves the layers not yet started undone. On a CPU each thread
    keeps to one core (``one_core``)."""
    layers = list(range(trace.num_layers)) if layers is None else list(layers)
    pool = ThreadPoolExecutor(min(workers or scan_workers(trace), max(len(layers), 1)),
                              initializer=one_core if trace.device.type == "cpu" else None)
    try:
        for done in [pool.submit(contextvars.copy_context().run, work, layer) for layer in layers]:
            yield done.result()
    finally:
        pool.shutdown(cancel_futures=True)


def scan(trace: Trace, kind: str, rows: list[int] | None = None, *, maps: Reader | None = None,
         softmax: Reader | None = None, layers: list[int] | None = None, workers: int | None = None) -> None:
    """Compute the maps of ``kind`` of every head at the query positions ``rows`` (all by default) in
    ``layers`` (all by default), block by block, handing each block to the readers: ``maps`` the
    map (D for ``diff``), ``softmax`` the softmax maps before D is formed (``Trace.map_blocks``). The
    layers run in ``workers`` threads (``per_layer``)."""
    def one_layer(layer: int) -> None:
        hook = None if softmax is None else lambda block: softmax(layer, block)
        for block in trace.map_blocks(layer, kind, rows=rows, softmax=hook):
            if maps is not None:
                maps(layer, block)

    for _ in per_layer(trace, one_layer, layers, workers):
        pass
