"""How the app is served: launch settings that refuse what no valid request needs, and the MCP server.

    DIFFLLAMA_LENS_QUEUE_SIZE   requests that may wait in the queue, all sessions together (default 128)
    DIFFLLAMA_LENS_MCP          1: also serve the stateless endpoints as MCP tools (default off)
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from pathlib import Path

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from diffllama import limits

from . import common

QUEUE_SIZE = int(os.environ.get("DIFFLLAMA_LENS_QUEUE_SIZE", 128))
MCP_ENV = "DIFFLLAMA_LENS_MCP"


class BodyLimit:
    """Refuses a request whose declared body is larger than any valid request (two texts at the input
    limit, every character JSON-escaped) before reading it, so a 50 MB post costs nothing to answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            limit = 12 * limits.max_input_chars() + 1_000_000
            if declared and declared.isdigit() and int(declared) > limit:
                message = (f"the request is {int(declared) / 1e6:.1f} MB; this server takes at most "
                           f"{limits.max_input_chars():,} characters per text input: shorten the text")
                await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class QueueJoins:
    """Every request for the model queue is checked (``common.admit``) before gradio queues it — here,
    on the event loop, not in a gradio validator, which costs each join a worker thread. Joins of one
    session (of one client address, for API calls that bring no session) pass one at a time, so the
    check counts every job the session queued before it."""

    def __init__(self, app):
        self.app = app
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not (path.endswith("/queue/join") or "/call/" in path):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:  # the body is small: BodyLimit, outside this, refused large ones
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
            session, values = request.get("session_hash"), request.get("data")
            if isinstance(values, dict):  # /call/v2 takes inputs by name
                values = list(values.values())
        except (ValueError, AttributeError):  # not a JSON object: gradio answers it
            request, session, values = None, None, None
        blocks = scope["app"].get_blocks()
        event = _event(blocks, request, path)
        address = (scope.get("client") or ("", 0))[0]
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, if the client goes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        if event is None or event.concurrency_id != common.MODEL_QUEUE or not isinstance(values, list):
            await self.app(scope, replay, send)
            return
        lock = self._locks.setdefault(f"session:{session}" if session else f"address:{address}", asyncio.Lock())
        async with lock:
            refusals = await common.admit(blocks._queue, event, session, address, values)
            if refusals is not None:
                await JSONResponse({"detail": refusals}, status_code=422)(scope, replay, send)
                return
            await self.app(scope, replay, send)


def _event(blocks, request: dict | None, path: str):
    """The event a join is for: by ``fn_index`` (gradio's own clients), or by the API name in the path."""
    if request and isinstance(request.get("fn_index"), int):
        return blocks.fns.get(request["fn_index"])
    if "/call/" in path:
        api_name = path.rstrip("/").rsplit("/", 1)[-1]
        return next((fn for fn in blocks.fns.values() if fn.api_name == api_name), None)
    return None


def remove_files(demo) -> None:
    """At shutdown: delete every file gradio copied into its cache for this app (exports, overview
    thumbnails). Gradio's own shutdown clean-up (``delete_cache``) runs only if the server stops within
    5 s, which open browser streams prevent."""
    for files in demo.temp_file_sets:
        for name in list(files):
            path = Path(name)
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # gradio keeps each file in a folder named by its hash
            except OSError:
                pass
        files.clear()


def mcp_enabled() -> bool:
    """Whether the app also serves MCP tools (gradio's MCP server at /gradio_api/mcp/): off unless asked for."""
    return os.environ.get(MCP_ENV, "") == "1"


def tools_only(demo, tools) -> None:
    """Leave only ``tools`` among the documented endpoints, which gradio's MCP server turns into tools.
    The tabs' endpoints act on the session's last run, and gradio's MCP server calls them through one
    client, one session for every agent: one agent would read another's run. They stay callable by API
    clients (``api_visibility="undocumented"``), out of the API page and the tool list."""
    names = {fn.__name__ for fn in tools}
    for block_fn in demo.fns.values():
        if block_fn.api_visibility == "public" and block_fn.api_name not in names:
            block_fn.api_visibility = "undocumented"


def launch_settings() -> dict:
    """``Blocks.launch`` settings, new for each launch: gradio adds its lifespan handlers (the cache
    clean-up, the MCP session manager) to ``app_kwargs``, which must not carry over to another launch.
    The app takes no files: gradio's upload route then accepts none (anything uploaded would be served back).
    No run history: gradio would keep every call's inputs and outputs in the visitor's localStorage (up to 100
    runs; a map view's output is ≈ 2 MB), re-serialising that list after each event, which took most of a view's
    time in the browser; a link (``components.links``) reopens a view instead, recomputed."""
    return dict(max_file_size=0, mcp_server=mcp_enabled(), run_history=False,
                app_kwargs={"middleware": [Middleware(BodyLimit), Middleware(QueueJoins)]})
