"""A trace's bounded memo of what several views read from one layer."""

from __future__ import annotations

import threading
from typing import Callable

import torch


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class LayerCache:
    """A trace's memo of what several views read from one layer (its queries, values, pooled
    softmax maps), bounded in bytes and freed with the trace.

    When full, the most recently stored other entry makes room: a scan over every layer then keeps
    its first layers for the next scan (least-recently-used would evict each one just before it is
    needed again), and the layer a visitor is looking at stays until another one is stored. Traces
    are read from several threads: ``get`` computes a missing entry once, in the first thread that asks."""

    def __init__(self, max_bytes: float):
        self.max_bytes = max_bytes
        self._entries: dict[tuple, tuple[object, int]] = {}  # insertion-ordered: last stored last
        self._computing: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def __reduce__(self):  # a copied or pickled trace starts with an empty cache of the same bound
        return LayerCache, (self.max_bytes,)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def lookup(self, key: tuple):
        """The entry's value, or None."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[0] if entry else None

    def store(self, key: tuple, value, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.max_bytes:
                return
            while sum(size for _, size in self._entries.values()) + nbytes > self.max_bytes:
                # entries counted as 0 bytes (results kept with the trace whose size is elsewhere) free nothing
                self._entries.pop(next(k for k in reversed(self._entries) if self._entries[k][1] > 0))
            self._entries[key] = (value, nbytes)

    def get(self, key: tuple, compute: Callable[[], object], size: Callable[[object], int]):
        value = self.lookup(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:  # threads asking for the same entry wait for the first one's result
            try:
                value = self.lookup(key)
                if value is None:
                    value = compute()
                    self.store(key, value, size(value))
                return value
            finally:
                with self._lock:
                    self._computing.pop(key, None)
