"""Request checking for the model queue, before gradio queues a request, so a refusal is immediate however
long the queue: text within the length and token limits, the tab's model slots loaded, and the answer to a
refused request."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import typing
import weakref

import anyio
import gradio as gr
from starlette.responses import JSONResponse

from diffllama import limits

from . import links, run_store
from .errors import message
from .model_queue import MODEL_QUEUE, client_address, crowded, take_turns
from .model_slots import CACHE, slot_task
from .panel.sharing import link_field


async def admit(event, values: list, names: list[str], problems: dict[int, str]) -> dict[int, str]:
    """Checks a request for the model queue before gradio queues it, so a refusal is immediate however
    long the queue: text within the length limit, the tab's model slots loaded — in the load lane, so
    a slow or failing load never holds a model-queue slot — and the text's tokens within what each model
    reads for the task (``LensModel.check_task_input``, the rule its runner applies again before any
    trace). ``problems``: refusals found already (each value's type and range, ``accepts``), by input
    index; returns them with these checks' added."""
    inputs, problems = list(event.inputs), dict(problems)
    task = next(filter(None, map(slot_task, inputs)), None)
    models = []
    for index, (component, value) in enumerate(zip(inputs, values)):
        if index in problems:
            continue
        try:
            if isinstance(value, str):
                limits.check_length(value, names[index])
            if slot_task(component):
                models.append(await anyio.to_thread.run_sync(CACHE.get, value, task))  # waits at most the load time limit
        except Exception as error:  # noqa: BLE001 - every refusal is a message
            problems[index] = message(error, "admission")
    texts = [(i, v) for i, (c, v) in enumerate(zip(inputs, values)) if isinstance(v, str) and v and c.get_block_name() == "textbox"]
    if not problems and texts:
        what = " + ".join(names[i] for i, _ in texts)
        try:
            for model in models:
                await anyio.to_thread.run_sync(model.check_task_input, what, [text for _, text in texts])
        except ValueError as error:
            problems[max(texts, key=lambda text: len(text[1]))[0]] = message(error, "admission")
    return problems


def refusals(event, session: str | None, names: list[str], problems: dict[int, str]) -> list[dict]:
    """The answer to a refused request: one ``gr.validate`` per input (what gradio's own validators
    answer, so clients show the messages on the inputs). A tab's refused run is a failed run: its
    views must not show the one before."""
    task = next(filter(None, map(slot_task, event.inputs)), None)
    if task is not None and session:
        run_store.STORE.fail(session, task)
    return [dict(gr.validate(index not in problems, problems.get(index, "")), parameter_name=name)
            for index, name in enumerate(names)]


class QueueJoins:
    """Every request to run an event is checked before gradio queues it — here, on the event loop, not
    in a gradio validator, which costs each join a worker thread: its values against what each input
    takes (``accepts``: a message naming the parameter and its allowed values, where gradio would
    answer "the upstream app has raised an exception"), and for the model queue ``admit`` and the caps
    per session and per client address (``model_queue.crowded``), after which addresses take turns in
    the queue (``model_queue.take_turns``). Joins from one address pass the caps one at a time, so each
    counts every job queued before it."""

    def __init__(self, app):
        self.app = app
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not (path.endswith("/queue/join") or "/call/" in path):
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        replay = _replay(body, receive)
        request, session, values = _join(body, path)
        event = _event(scope["app"].get_blocks(), request, path)
        if event is None or not isinstance(values, (list, dict)):
            await self.app(scope, replay, send)
            return
        names = parameter_names(event)
        try:
            values = arguments(event, values, names)
        except ValueError as error:
            await _refuse(scope, replay, send, message(error, "arguments"))
            return
        problems = {}
        for index, value in enumerate(values):
            try:
                accepts(event, index, names[index], value)
            except ValueError as error:
                problems[index] = message(error, "arguments")
        if event.concurrency_id == MODEL_QUEUE:
            problems = await admit(event, values, names, problems)
            if not problems:
                problems = await self._queue(scope, replay, send, session)
        if problems:
            await _refuse(scope, replay, send, refusals(event, session, names, problems))
        elif event.concurrency_id != MODEL_QUEUE:
            await self.app(scope, replay, send)

    async def _queue(self, scope, replay, send, session: str | None) -> dict[int, str]:
        """Passes an admitted join to the model queue unless its session or address is at its cap (the
        refusal, as problems); addresses take turns once gradio has queued it, before the join is
        answered (so whoever reads the answer finds the queue in its order)."""
        headers = dict(scope["headers"])
        address = client_address((scope.get("client") or ("", 0))[0], headers.get(b"x-forwarded-for", b"").decode("latin-1"))
        queue = scope["app"].get_blocks()._queue
        async with self._locks.setdefault(address, asyncio.Lock()):
            crowd = crowded(queue, session, address)
            if crowd is not None:
                return {0: message(ValueError(crowd), "admission")}
            async def answer(message):
                if message["type"] == "http.response.start":
                    take_turns(queue)
                await send(message)

            await self.app(scope, replay, answer)
            return {}


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:  # the body is small: BodyLimit, outside this, refused large ones
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that gives the app the body already read, then whatever comes (a disconnect)."""
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replay


def _join(body: bytes, path: str) -> tuple[dict | None, str | None, list | dict | None]:
    """A join's request, session and values (inputs by name, at the top level, for ``/call/v2``)."""
    try:
        request = json.loads(body)
        session, values = request.get("session_hash"), request.get("data")
        if "/call/v2/" in path:
            values = {k: v for k, v in request.items() if k not in ("session_hash", "oauth_token")}
    except (ValueError, AttributeError):  # not a JSON object: gradio answers it
        return None, None, None
    return request, session, values


async def _refuse(scope, replay, send, detail) -> None:
    await JSONResponse({"detail": detail}, status_code=422)(scope, replay, send)


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
