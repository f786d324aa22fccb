"""One pass over every layer's maps that several measures read at once (head statistics and sink
scores): a layer's logits and softmaxes are computed once for all of them, and the layers are shared
among worker threads (``per_layer``).

A reader is called with ``(layer, block)``. Readers of different layers may run at the same time
(in different threads), so a reader writes only what belongs to its layer, or guards what it shares."""

from __future__ import annotations

import contextvars
import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from ..tracing import Block, Trace

Reader = Callable[[int, Block], None]
Result = TypeVar("Result")


def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's CPU kernels and MKL's products run on: the one torch ships (pip
    wheels), else one already loaded into the process; None without OpenMP."""
    shipped = [path for pattern in ("libgomp*", "libiomp5*", "libomp*") for path in sorted((Path(torch.__file__).parent / "lib").glob(pattern))]
    runtime = ctypes.CDLL(str(shipped[0])) if shipped else ctypes.CDLL(None)
    return runtime if hasattr(runtime, "omp_set_num_threads") else None


OPENMP = _openmp()


def one_core() -> None:
    """Keep the calling thread's torch work to one core. OpenMP's team size is a per-thread setting;
    torch sets a thread's (to every core) on its first operation, and ``torch.set_num_threads`` would
    also change every thread started later (a generation's, a forward's). A team of two for each of
    two threads on two cores makes each parallel region of a few microseconds end in a barrier whose
    waiting thread spins while the other is descheduled: through the app, the activation outliers
    cost the server 7–8 CPU-seconds for 1 of work. One thread per core, each alone, does the same
    work without waiting."""
    torch.get_num_threads()  # torch's per-thread setting happens here, before ours
    if OPENMP is not None:
        OPENMP.omp_set_num_threads(1)


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
