"""How the app is served: launch settings that refuse what no valid request needs, and the MCP server.

    DIFFLLAMA_LENS_QUEUE_SIZE   requests that may wait in the queue, all sessions together (default 128)
    DIFFLLAMA_LENS_MCP          1: also serve the stateless endpoints as MCP tools (default off)
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse
from uvicorn.protocols.http import h11_impl

from diffllama import limits

from . import links
from .admission import QueueJoins

QUEUE_SIZE = int(os.environ.get("DIFFLLAMA_LENS_QUEUE_SIZE", 128))
MCP_ENV = "DIFFLLAMA_LENS_MCP"
MAX_REQUEST_HEAD_BYTES = 256 * 1024  # the most a request's head may hold while it arrives (``accept_long_heads``)


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


class AddressLimit:
    """Refuses an address longer than any link to the app (``links.MAX_LINK_CHARS``) with a page that
    says so, before gradio reads it (gradio answers a 100 KB address with a server error)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = len(scope.get("raw_path") or scope.get("path", "")) + len(scope.get("query_string", b""))
            if length > links.MAX_LINK_CHARS:
                text = (f"This address is {length:,} characters long; links to this app are at most "
                        f"{links.MAX_LINK_CHARS:,}. Make the link again from the app (its Share button), or open the app itself.")
                response = HTMLResponse(f"<!doctype html><title>Link too long</title><h1>This link cannot be opened</h1>"
                                        f"<p>{text}</p><p><a href=\"/\">Open DiffLlama Lens</a></p>", status_code=414) \
                    if scope["method"] == "GET" else JSONResponse({"detail": text}, status_code=414)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def accept_long_heads() -> None:
    """Let a request's head (address and headers) grow to ``MAX_REQUEST_HEAD_BYTES`` while it arrives.
    uvicorn's HTTP parser (h11) keeps at most 16 KiB of an unfinished head: a longer address that TCP
    happens to deliver in two reads is answered "400 Invalid HTTP request" before ``AddressLimit`` sees
    it, one that arrives in one read gets its page. Gradio builds uvicorn's settings without a way to pass
    ``h11_max_incomplete_event_size``, so this sets the default uvicorn falls back to: addresses up to
    256 KiB always get ``AddressLimit``'s page, a larger one may get uvicorn's 400. It also bounds what one
    connection buffers."""
    h11_impl.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE = MAX_REQUEST_HEAD_BYTES


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
    time in the browser; a link (``components.links``) reopens a view instead, recomputed. Long request
    heads reach ``AddressLimit`` (``accept_long_heads``)."""
    accept_long_heads()
    return dict(max_file_size=0, mcp_server=mcp_enabled(), run_history=False,
                app_kwargs={"middleware": [Middleware(AddressLimit), Middleware(BodyLimit), Middleware(QueueJoins)]})
