"""The run store: bounded in bytes (least recently used first), idle runs dropped, sessions freed,
and a view always told why there is no run."""

import pytest

from components import run_store
from components.run_store import EXPIRED, FAILED, NEVER_RUN, RUNNING, TOO_LARGE, Run, RunMissing, RunStore


class FakeTrace:
    def __init__(self, nbytes):
        self.nbytes = nbytes


def run(nbytes: int) -> Run:
    return Run("classification", {"A": "a", "B": "b"}, {"A": FakeTrace(nbytes), "B": FakeTrace(0)}, {"A": "", "B": ""})


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_least_recently_used_runs_go_first_when_the_bound_is_reached():
    store = RunStore(max_bytes=300, ttl_s=1e9)
    for session in ("s1", "s2", "s3"):
        store.keep(session, "tab", run(100))
    store.get("s1", "tab")  # s1 viewed: now s2 is the least recently used
    store.keep("s4", "tab", run(100))
    assert store.nbytes == 300 and len(store) == 3
    with pytest.raises(RunMissing, match=EXPIRED):
        store.get("s2", "tab")
    assert store.get("s1", "tab") and store.get("s4", "tab")
    store.keep("s5", "tab", run(301))  # larger than the whole store: not kept, and nothing else evicted for it
    with pytest.raises(RunMissing, match=TOO_LARGE):
        store.get("s5", "tab")
    assert len(store) == 3


def test_idle_runs_expire_and_ended_sessions_are_freed():
    clock = Clock()
    store = RunStore(max_bytes=1e9, ttl_s=60, clock=clock)
    store.keep("idle", "tab", run(10))
    store.keep("busy", "tab", run(10))
    store.keep("busy", "other tab", run(10))
    clock.now = 50
    store.get("busy", "tab")
    clock.now = 70
    assert store.sweep() == 2  # "idle" and the unviewed "other tab"
    with pytest.raises(RunMissing, match=EXPIRED):
        store.get("idle", "tab")
    store.end_session("busy")
    assert len(store) == 0
    with pytest.raises(RunMissing, match="run the tab first"):
        store.get("busy", "tab")


def test_a_failed_run_never_leaves_the_views_on_the_previous_one():
    store = RunStore(max_bytes=1e9, ttl_s=1e9)
    with pytest.raises(RunMissing, match="run the tab first"):
        store.get("s", "tab")
    store.keep("s", "tab", run(10))
    store.begin("s", "tab")
    with pytest.raises(RunMissing, match=RUNNING):
        store.get("s", "tab")
    store.fail("s", "tab")
    with pytest.raises(RunMissing, match=FAILED):
        store.get("s", "tab")
    assert NEVER_RUN.startswith("run the tab first")


def test_recording_keeps_only_runs_that_finish(monkeypatch):
    store = RunStore(max_bytes=1e9, ttl_s=1e9)
    monkeypatch.setattr(run_store, "STORE", store)
    with run_store.recording(None, "tab") as keep:
        keep(run(10))
    assert run_store.current(None, "tab").models["A"] == "a"
    with pytest.raises(ZeroDivisionError):
        with run_store.recording(None, "tab"):
            1 / 0
    with pytest.raises(RunMissing, match=FAILED):
        run_store.current(None, "tab")
