"""Keeping a thread's torch work to one core, without touching any other thread's (OpenMP's team
size is a per-thread setting; ``torch.set_num_threads`` would also change every thread started later)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch


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
