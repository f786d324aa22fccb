"""The model queue, the one lane every event that runs a model joins, and its fairness on a public Space:
caps per session and per client address, and addresses taking turns.

    DIFFLLAMA_LENS_CONCURRENCY              requests that may run a model at once (default 2)
    DIFFLLAMA_LENS_MAX_QUEUED_PER_SESSION   model requests one session may have waiting or running (default 4);
                                            API calls without a session count per client address
    DIFFLLAMA_LENS_MAX_QUEUED_PER_ADDRESS   model requests one client address may have waiting or running, all its
                                            sessions together (default 8; ``client_address``)
    DIFFLLAMA_LENS_PROXY_HOPS               proxies in front of the server that add the visitor's address to
                                            X-Forwarded-For (default 1 on a Space, else 0)
"""

from __future__ import annotations

import os

MODEL_QUEUE = "model"  # one concurrency group for every event that runs a model
MODEL_CONCURRENCY = int(os.environ.get("DIFFLLAMA_LENS_CONCURRENCY", 2))  # 2 CPU cores; raise on a GPU
MAX_QUEUED_PER_SESSION = int(os.environ.get("DIFFLLAMA_LENS_MAX_QUEUED_PER_SESSION", 4))
MAX_QUEUED_PER_ADDRESS = int(os.environ.get("DIFFLLAMA_LENS_MAX_QUEUED_PER_ADDRESS", 8))
LOAD_QUEUE, LOAD_CONCURRENCY = "load", 4  # model-slot loads: their own lane, never the model queue

try:  # on a ZeroGPU Space, functions that run models get a GPU for their duration; elsewhere a no-op
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn


def model_queue() -> dict:
    """Event settings for anything that runs a model: the one queue they share. Every join to it is
    checked first (``admission.QueueJoins``)."""
    return dict(concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)


def crowded(queue, session: str | None, address: str) -> str | None:
    """Why a request may not join the model queue now, or None: its session already has
    ``MAX_QUEUED_PER_SESSION`` requests waiting or running there, or its client address (every session
    from it together, however many it makes up) ``MAX_QUEUED_PER_ADDRESS``."""
    events = model_queue_events(queue)
    mine = [e for e in events if event_address(e) == address]
    busy = sum(e.session_hash == session for e in events) if session else \
        sum(e.session_hash == e._id for e in mine)  # API calls without a session of their own, per address
    if busy >= MAX_QUEUED_PER_SESSION:
        return (f"you already have {busy} requests waiting or running (at most {MAX_QUEUED_PER_SESSION}); "
                "wait for them to finish")
    if len(mine) >= MAX_QUEUED_PER_ADDRESS:
        return (f"your address already has {len(mine)} requests waiting or running, all its sessions together (at "
                f"most {MAX_QUEUED_PER_ADDRESS}); wait for them to finish")
    return None


def take_turns(queue) -> None:
    """Reorders the model queue's waiting requests so that client addresses take turns: every
    address's next request before any address's one after it, counting what each has running, and
    in order of arrival otherwise. Gradio serves its queue first come, first served, so one address
    at its cap would otherwise put every visitor who comes later behind all of its requests. Called
    on the event loop, where gradio changes its queue, after each join."""
    waiting = queue.event_queue_per_concurrency_id.get(MODEL_QUEUE)
    if waiting is None or len(waiting.queue) < 2:
        return
    taken: dict[str, int] = {}
    for job in queue.active_jobs:
        for event in job or []:
            if event.concurrency_id == MODEL_QUEUE:
                taken[event_address(event)] = taken.get(event_address(event), 0) + 1

    def turn(event) -> int:
        address = event_address(event)
        taken[address] = taken.get(address, 0) + 1
        return taken[address]

    turns = [(turn(event), arrival, event) for arrival, event in enumerate(waiting.queue)]
    waiting.queue[:] = [event for *_, event in sorted(turns, key=lambda t: t[:2])]



def model_queue_events(queue) -> list:
    """Model-queue jobs, waiting or running. Gradio keeps no count per session or address, so this
    reads its queue (on the event loop, where gradio changes it)."""
    waiting = queue.event_queue_per_concurrency_id.get(MODEL_QUEUE)
    events = [*(waiting.queue if waiting else []), *(e for job in queue.active_jobs if job for e in job)]
    return [e for e in events if e.concurrency_id == MODEL_QUEUE]


# Proxies in front of the server that add the visitor's address to X-Forwarded-For: a Space has one.
PROXY_HOPS = int(os.environ.get("DIFFLLAMA_LENS_PROXY_HOPS", 1 if os.environ.get("SPACE_ID") else 0))


def client_address(peer: str, forwarded: str | None) -> str:
    """The address a request counts under: the connection's peer (uvicorn's, which already reads
    X-Forwarded-For from a proxy on this machine: ``FORWARDED_ALLOW_IPS``, default 127.0.0.1), or
    behind ``PROXY_HOPS`` proxies the address the outermost of them was reached from, the entry it
    added to X-Forwarded-For. Entries before it are whatever the client wrote: not trusted."""
    hops = [hop.strip() for hop in (forwarded or "").split(",") if hop.strip()]
    return hops[-PROXY_HOPS] if PROXY_HOPS and len(hops) >= PROXY_HOPS else peer


def event_address(event) -> str:
    request = event.request
    if request is None or request.client is None:
        return ""
    return client_address(request.client.host, request.headers.get("x-forwarded-for"))

