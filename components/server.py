"""How the app is served to strangers: launch settings that refuse what no valid request needs.

    DIFFLLAMA_LENS_QUEUE_SIZE   requests that may wait in the queue, all sessions together (default 128)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import weakref
from pathlib import Path

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from diffllama import limits

QUEUE_SIZE = int(os.environ.get("DIFFLLAMA_LENS_QUEUE_SIZE", 128))


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
    """Queue joins, one at a time per session (per client address for API calls that bring no
    session), so the admission check (``common.model_queue``) counts every job the session queued
    before: gradio checks a join and appends it to the queue in two steps that other joins interleave.

    A join gradio refuses with a 400 (an input it cannot read: a slider value out of range, text for a
    number) is answered as a failed validation carrying gradio's reason, which clients show, instead
    of a bare 400 that gradio_client reports without it."""

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
            session = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):  # not a JSON object: gradio answers it
            session = None
        client = scope.get("client") or ("", 0)
        key = f"session:{session}" if session else f"address:{client[0]}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, if the client goes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async with lock:
            await self.app(scope, replay, _readable_refusals(send))


PREPROCESS_ERROR = re.compile(r"Could not preprocess input component at index (\d+) \(a `(\w+)` component\).*?\n\n(.*)", re.S)


def _readable_refusals(send):
    """``send`` for a join's response, rewriting gradio's 400 for an unreadable input (see ``QueueJoins``)."""
    held = {}

    async def rewriting(message):
        if message["type"] == "http.response.start" and message["status"] == 400:
            held["start"] = message
            return
        if "start" not in held:
            await send(message)
            return
        held.setdefault("body", []).append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(held["body"])
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        readable = isinstance(detail, str)
        if readable:
            match = PREPROCESS_ERROR.match(detail)
            reason, name = (match[3], f"input {int(match[1]) + 1} ({match[2]})") if match else (detail, "input")
            body = json.dumps({"detail": [{"__type__": "validate", "is_valid": False, "message": reason.strip(" \n'"),
                                           "parameter_name": name}]}).encode()
        start = held["start"]
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "status": 422 if readable else 400,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return rewriting


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


# The app takes no files: gradio's upload route then accepts none (anything uploaded would be served back).
LAUNCH_SETTINGS = dict(max_file_size=0, app_kwargs={"middleware": [Middleware(BodyLimit), Middleware(QueueJoins)]})
