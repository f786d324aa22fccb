"""Each visitor's last run per tab, kept on the server for the tab's views: one store for the whole app,
bounded in bytes (least recently used evicted first), freed when a session ends or sits idle.

A run holds traces (per-layer hidden states, linear in the input length but still megabytes), so it
never travels in ``gr.State``, which gradio copies per visitor and keeps for an hour after they leave.

    DIFFLLAMA_LENS_SESSION_MEMORY_GB   bytes of runs kept for all sessions together (default 2)
    DIFFLLAMA_LENS_SESSION_TTL_MIN     minutes a run is kept without being viewed (default 30)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr

MEMORY_ENV, TTL_ENV = "DIFFLLAMA_LENS_SESSION_MEMORY_GB", "DIFFLLAMA_LENS_SESSION_TTL_MIN"
log = logging.getLogger("diffllama_lens")

# why a tab has no run to show; the views answer with these
NEVER_RUN = "run the tab first: the views show the input of the tab's last run"
RUNNING = "the tab's run is still in progress; the views show it once it finishes"
FAILED = "the tab's last run failed, so there is no current run to show; run the tab again"
EXPIRED = "this run has expired; run the tab again"
TOO_LARGE = "this run was too large for the server to keep for the views; run the tab again with a shorter input"


class RunMissing(ValueError):
    """A view asked for a run the store does not hold; the message says why and what to do."""


@dataclass
class Run:
    """A tab's last run: what its views need, for models A and B."""

    task: str
    models: dict[str, str]  # slot -> the source as the visitor typed it
    traces: dict[str, object]  # slot -> diffllama.Trace of the forward pass the tab showed
    texts: dict[str, str]  # slot -> the text the trace's character offsets point into
    reference: object = None  # diffllama.records.ReferenceSpan allocation is measured on (QA: the gold answer), or None
    span_sequence: int = 0  # which text of a pair a typed span and ``texts`` refer to (1 = QA context)
    question: str | None = None  # QA: the first text of the pair (sequence 0), for windows and token heat
    segments: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # slot -> (token position, name)
    # where a new part of the input starts (QA: the context; generation: the continuation), marked on maps
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # QA slot -> (window shown, windows in all)
    # the main action's other inputs by parameter name (text, seed, …): what links and provenance name
    inputs: dict[str, object] = field(default_factory=dict)
    rows: list[list] = field(default_factory=list)  # a per-token table the tab pages through (tagging)

    @property
    def nbytes(self) -> int:
        return (sum(trace.nbytes for trace in self.traces.values()) + sum(len(text) for text in self.texts.values())
                + sum(len(str(value)) for value in self.inputs.values()) + sum(len(str(row)) for row in self.rows))


@dataclass
class _Entry:
    run: Run
    nbytes: int
    used: float


class RunStore:
    """Runs by (session, tab). ``begin`` forgets a tab's previous run (so a failed run never leaves
    its views on the one before), ``keep`` stores the finished one, ``get`` serves the views."""

    def __init__(self, max_bytes: float | None = None, ttl_s: float | None = None, clock=time.monotonic):
        self.max_bytes = max_bytes if max_bytes is not None else float(os.environ.get(MEMORY_ENV, 2)) * 1e9
        self.ttl_s = ttl_s if ttl_s is not None else float(os.environ.get(TTL_ENV, 30)) * 60
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # least recently used first
        self._missing: OrderedDict[tuple[str, str], str] = OrderedDict()  # why a key has no run (bounded)
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, session: str, tab: str) -> None:
        with self._lock:
            self._entries.pop((session, tab), None)
            self._note((session, tab), RUNNING)

    def fail(self, session: str, tab: str) -> None:
        """The tab's run failed (or was refused before it began): its views have no run to show."""
        with self._lock:
            self._entries.pop((session, tab), None)
            self._note((session, tab), FAILED)

    def keep(self, session: str, tab: str, run: Run) -> None:
        nbytes = run.nbytes
        with self._lock:
            key = (session, tab)
            self._missing.pop(key, None)
            if nbytes > self.max_bytes:
                self._note(key, TOO_LARGE)
                return
            self._entries[key] = _Entry(run, nbytes, self._clock())
            self._entries.move_to_end(key)
            freed = self._evict(lambda: self.nbytes > self.max_bytes)
        self._start_sweeper()
        if freed:
            release_memory()

    def get(self, session: str, tab: str) -> Run:
        with self._lock:
            self._evict(self._idle)
            entry = self._entries.get((session, tab))
            if entry is None:
                raise RunMissing(self._missing.get((session, tab), NEVER_RUN))
            entry.used = self._clock()
            self._entries.move_to_end((session, tab))
            return entry.run

    def end_session(self, session: str) -> None:
        """Free everything a session kept (its page was closed)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == session]:
                del self._entries[key]
            for key in [k for k in self._missing if k[0] == session]:
                del self._missing[key]
        release_memory()

    def sweep(self) -> int:
        """Drop runs idle for longer than the time-to-live; returns how many."""
        with self._lock:
            freed = self._evict(self._idle)
        if freed:
            release_memory()
        return freed

    def _idle(self) -> bool:
        return bool(self._entries) and self._clock() - next(iter(self._entries.values())).used > self.ttl_s

    def _evict(self, condition) -> int:
        freed = 0
        while self._entries and condition():
            key, _ = self._entries.popitem(last=False)
            self._note(key, EXPIRED)
            freed += 1
        return freed

    def _note(self, key: tuple[str, str], reason: str) -> None:
        self._missing[key] = reason
        self._missing.move_to_end(key)
        while len(self._missing) > 10_000:  # reasons are a few bytes each; old ones read as "never run"
            self._missing.popitem(last=False)

    def _start_sweeper(self) -> None:
        """One daemon thread frees idle runs even when no request arrives to trigger it."""
        if self._sweeper is None:
            def loop():
                while True:
                    time.sleep(min(60.0, max(self.ttl_s / 4, 0.05)))
                    self.sweep()
            self._sweeper = threading.Thread(target=loop, name="run-store-sweeper", daemon=True)
            self._sweeper.start()


def release_memory() -> None:
    """Hand freed heap pages back to the OS: glibc keeps them after large tensors are freed, so a
    process's RSS would otherwise stay at its peak (no-op where glibc is absent)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()
STORE = RunStore()


def session_of(request) -> str:
    """The visitor's session (a ``gr.Request``'s hash); direct calls without a request share "local"."""
    return getattr(request, "session_hash", None) or "local"


@contextmanager
def recording(request, tab: str):
    """Around a tab's main action: its previous run is forgotten now, ``keep(run)`` stores the new
    one, and a run that raises (or is abandoned mid-stream) leaves the views saying it failed."""
    session, kept = session_of(request), []
    STORE.begin(session, tab)

    def keep(run: Run) -> None:
        STORE.keep(session, tab, run)
        kept.append(run)

    try:
        yield keep
    finally:
        if not kept:
            STORE.fail(session, tab)


def forget_session(request: gr.Request) -> None:
    """``demo.unload``: the visitor closed the page, so their runs are freed now."""
    STORE.end_session(session_of(request))


def current(request, tab: str) -> Run:
    """The run a view shows, or a ``RunMissing`` message saying why there is none."""
    return STORE.get(session_of(request), tab)
