"""How the app is served: launch settings that refuse what no valid request needs, and the MCP server.

    DIFFLLAMA_LENS_QUEUE_SIZE   requests that may wait in the queue, all sessions together (default 128)
    DIFFLLAMA_LENS_MCP          1: also serve the stateless endpoints as MCP tools (default off)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import typing
import weakref
from pathlib import Path

from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse

from diffllama import limits

from . import common, links
from .panel.sharing import link_field

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


class QueueJoins:
    """Every request to run an event is checked before gradio queues it — here, on the event loop, not
    in a gradio validator, which costs each join a worker thread: its values against what each input
    takes (``accepts``: a message naming the parameter and its allowed values, where gradio would
    answer "the upstream app has raised an exception"), and for the model queue ``common.admit`` and
    the caps per session and per client address (``common.crowded``), after which addresses take turns
    in the queue (``common.take_turns``). Joins from one address pass the caps one at a time, so each
    counts every job queued before it."""

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
            if "/call/v2/" in path:  # inputs by name, at the top level
                values = {k: v for k, v in request.items() if k not in ("session_hash", "oauth_token")}
        except (ValueError, AttributeError):  # not a JSON object: gradio answers it
            request, session, values = None, None, None
        blocks = scope["app"].get_blocks()
        event = _event(blocks, request, path)
        headers = dict(scope["headers"])
        address = common.client_address((scope.get("client") or ("", 0))[0],
                                        headers.get(b"x-forwarded-for", b"").decode("latin-1"))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, if the client goes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def refuse(detail) -> None:
            await JSONResponse({"detail": detail}, status_code=422)(scope, replay, send)

        if event is None or not isinstance(values, (list, dict)):
            await self.app(scope, replay, send)
            return
        names = parameter_names(event)
        try:
            values = arguments(event, values, names)
        except ValueError as error:
            await refuse(common.message(error, "arguments"))
            return
        problems = {}
        for index, value in enumerate(values):
            try:
                accepts(event, index, names[index], value)
            except ValueError as error:
                problems[index] = common.message(error, "arguments")
        if event.concurrency_id == common.MODEL_QUEUE:
            problems = await common.admit(event, values, names, problems)
            if not problems:
                async with self._locks.setdefault(address, asyncio.Lock()):
                    crowd = common.crowded(blocks._queue, session, address)
                    if crowd is None:
                        await self.app(scope, replay, send)
                        common.take_turns(blocks._queue)
                        return
                    problems = {0: common.message(ValueError(crowd), "admission")}
        if problems:
            await refuse(common.refusals(event, session, names, problems))
            return
        await self.app(scope, replay, send)


def parameter_names(event) -> list[str]:
    """Each input's name as the API page shows it (the function's parameter), else its label."""
    declared = list(getattr(event, "input_parameter_names", None) or [])
    return [declared[i] if i < len(declared) and declared[i] else getattr(c, "label", None) or f"input {i + 1}"
            for i, c in enumerate(event.inputs)]


def arguments(event, values: list | dict, names: list[str]) -> list:
    """``values`` lined up with the event's inputs, as gradio lines them up: a REST call may leave out
    the inputs the API does not show (a session's state), and ``/call/v2`` names them."""
    inputs = list(event.inputs)
    shown = [i for i, component in enumerate(inputs) if not component.skip_api]
    if isinstance(values, dict):
        defaults = {name: p.default for name, p in inspect.signature(inspect.unwrap(event.fn)).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        values = {**defaults, **values}
        missing = [names[i] for i in shown if names[i] not in values]
        if not missing:
            return [values[names[i]] if i in shown else None for i in range(len(inputs))]
    elif len(values) == len(inputs):
        return values
    elif len(values) == len(shown):
        given = iter(values)
        return [next(given) if i in shown else None for i in range(len(inputs))]
    else:
        missing = [names[i] for i in shown[len(values):]]
    expected = ", ".join(names[i] for i in shown)
    if missing:
        raise ValueError(f"missing {', '.join(missing)}: this endpoint takes {len(shown)} values ({expected})")
    raise ValueError(f"this endpoint takes {len(shown)} values ({expected}); the request has {len(values)}")


WHOLE_LIMIT = 2 ** 53  # whole numbers with no range of their own (a seed): those every JSON client keeps exact


def accepts(event, index: int, name: str, value) -> None:
    """A ValueError naming the parameter and what it takes, unless the input at ``index`` accepts
    ``value``: its type, and its range or choices (what a link may set it to, ``link_field``); for a
    ``gr.api`` endpoint, the function's type hint. Texts are checked by their runners."""
    component = event.inputs[index]
    if component.get_block_name() == "api":
        hint = typing.get_type_hints(inspect.unwrap(event.fn)).get(name)
        field = links.Field(hint) if hint in (int, float, bool, str) else None
    else:
        field = link_field(component)
    if field is None or component.skip_api:
        return
    if isinstance(value, list) and getattr(component, "multiselect", False):
        for item in value:
            accepts_value(field, name, item)
    elif field.type is not str or field.choices or component.get_block_name() == "api":
        accepts_value(field, name, value)


def accepts_value(field: links.Field, name: str, value) -> None:
    if field.type is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} is {value!r}; it takes text")
        if field.choices and value not in field.choices:
            raise ValueError(f"{name} is {value!r}; it takes one of: {', '.join(map(repr, field.choices))}")
    elif field.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} is {value!r}; it takes true or false")
    else:
        whole = field.type is int
        low, high = field.minimum, field.maximum
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or whole and (value != int(value) or abs(value) > WHOLE_LIMIT) \
                or low is not None and value < low or high is not None and value > high:
            span = f" from {low:g} to {high:g}" if low is not None and high is not None else \
                " between -2**53 and 2**53" if whole else ""
            raise ValueError(f"{name} is {value!r}; it takes a {'whole ' if whole else ''}number{span}")


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
                app_kwargs={"middleware": [Middleware(AddressLimit), Middleware(BodyLimit), Middleware(QueueJoins)]})
