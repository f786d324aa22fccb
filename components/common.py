"""Pieces every tab shares: model slots A/B, the model queue and its admission checks, error
translation, exports, GPU wrapping.

    DIFFLLAMA_LENS_CONCURRENCY              requests that may run a model at once (default 2)
    DIFFLLAMA_LENS_MAX_QUEUED_PER_SESSION   model requests one session may have waiting or running (default 4);
                                            API calls without a session count per client address
    DIFFLLAMA_LENS_MAX_QUEUED_PER_ADDRESS   model requests one client address may have waiting or running, all its
                                            sessions together (default 8; ``server.client_address``)
    DIFFLLAMA_LENS_EXPORT_DIR               where on-request exports are written (default: a folder in the temp dir)
"""

from __future__ import annotations

import atexit
import csv
import functools
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import gradio as gr
import numpy as np
from gradio.context import LocalContext
from PIL import Image

from diffllama import LoadError, limits
from diffllama.provenance import Provenance
from diffllama.registry import ModelCache, bundled_models, resolve_source

from . import run_store
from .safe_text import for_html, for_markdown

log = logging.getLogger("diffllama_lens")
CACHE = ModelCache()  # loaded models are read-only; a visitor's runs live in run_store, nothing else per visitor
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


def message(error: Exception, where: str, *, html: bool = False) -> str:
    """What a visitor is told: a user error (the backend's ``ValueError``s) is its own message and one
    log line; anything else a message with a request id, logged with its traceback under that id.
    Messages quote what the visitor sent; ``html``: the text goes into the page as HTML (a toast), so
    it is escaped (``safe_text``) — API clients get it plain, as JSON."""
    if isinstance(error, ValueError):  # LoadError, RunMissing, TimeLimitError, bad values
        log.info("%s: %s", where, error)
        text = str(error)
    else:
        request_id = uuid.uuid4().hex[:8]
        log.error("unexpected error in %s, request %s", where, request_id, exc_info=error)
        text = (f"Something went wrong on the server (request {request_id}); the app keeps running. "
                "Try another input, and quote the request id if you report it.")
    return for_html(text) if html else text


def from_page() -> bool:
    """Whether the event running now came from gradio's page, which renders a toast's text as HTML.
    API clients get messages plain: gradio's clients say what they are (``x-gradio-user: api``, or
    ``mcp`` from its MCP server; the page sends no such header), REST calls use ``/call/``, MCP's
    direct calls ``/mcp``; a function called directly (a test) has no request."""
    request = LocalContext.request.get(None)
    if request is None:
        return False
    path = urlsplit(str(getattr(request, "url", ""))).path
    return "x-gradio-user" not in request.headers and "/call/" not in path and "/mcp" not in path


def user_errors(fn):
    """The edge of every callback: it runs under the per-request time limit, and what goes wrong
    reaches the visitor as a ``message``, never a stack trace — in the log too, a user error is one
    line (gradio would print each ``gr.Error``'s traceback)."""

    def translate(error: Exception):
        return gr.Error(message(error, fn.__name__, html=from_page()), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            # gradio runs each step of a generator in its own worker call, so every step resumes the deadline
            with limits.time_limit():
                deadline, steps = limits.deadline(), fn(*args, **kwargs)
            while True:
                try:
                    with limits.until(deadline):
                        item = next(steps)
                except StopIteration:
                    return
                except gr.Error:
                    raise
                except Exception as error:  # noqa: BLE001 - the edge where errors become messages
                    raise translate(error) from None
                yield item
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            with limits.time_limit():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise translate(error) from None
    return plain


# --- the model queue -------------------------------------------------------------------------
def model_queue() -> dict:
    """Event settings for anything that runs a model: the one queue they share. Every join to it is
    checked first (``admit``, called by ``server.QueueJoins``)."""
    return dict(concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)


# Tasks that read the whole input, however long (QA in windows): their inputs' tokens are counted before
# they are queued. Classification and tagging cut an input at the model's positions (with a notice), and
# generation refuses a prompt past them before any trace.
WHOLE_INPUT_TASKS = ("qa",)


async def admit(event, values: list, names: list[str], problems: dict[int, str]) -> dict[int, str]:
    """Checks a request for the model queue before gradio queues it, so a refusal is immediate however
    long the queue: text within the length limit, the tab's model slots loaded — in the load lane, so
    a slow or failing load never holds a model-queue slot — and, for a task that reads all of it, the
    text's tokens under each model within the token limit. ``problems``: refusals found already (each
    value's type and range, ``server``), by input index; returns them with these checks' added."""
    inputs, problems = list(event.inputs), dict(problems)
    task = next((_SLOTS[c._id][0] for c in inputs if getattr(c, "_id", None) in _SLOTS), None)
    models = []
    for index, (component, value) in enumerate(zip(inputs, values)):
        if index in problems:
            continue
        try:
            if isinstance(value, str):
                limits.check_length(value, names[index])
            if getattr(component, "_id", None) in _SLOTS:
                models.append(await anyio.to_thread.run_sync(CACHE.get, value, task))  # waits at most the load time limit
        except Exception as error:  # noqa: BLE001 - every refusal is a message
            problems[index] = message(error, "admission")
    texts = [(i, v) for i, (c, v) in enumerate(zip(inputs, values)) if isinstance(v, str) and v and c.get_block_name() == "textbox"]
    if not problems and task in WHOLE_INPUT_TASKS and texts:
        try:
            for model in models:
                await anyio.to_thread.run_sync(count_tokens, model, texts, names)
        except ValueError as error:
            problems[max(texts, key=lambda text: len(text[1]))[0]] = message(error, "admission")
    return problems


def count_tokens(model, texts: list[tuple[int, str]], names: list[str]) -> None:
    """Refuse ``texts`` (index, text) that would run more tokens through ``model`` than the limit."""
    tokens = sum(len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) for _, text in texts)
    limits.check_tokens(tokens, " + ".join(names[i] for i, _ in texts), sum(len(text) for _, text in texts),
                        f" for {model.source}")


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


def refusals(event, session: str | None, names: list[str], problems: dict[int, str]) -> list[dict]:
    """The answer to a refused request: one ``gr.validate`` per input (what gradio's own validators
    answer, so clients show the messages on the inputs). A tab's refused run is a failed run: its
    views must not show the one before."""
    task = next((_SLOTS[c._id][0] for c in event.inputs if getattr(c, "_id", None) in _SLOTS), None)
    if task is not None and session:
        run_store.STORE.fail(session, task)
    return [dict(gr.validate(index not in problems, problems.get(index, "")), parameter_name=name)
            for index, name in enumerate(names)]


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


# --- model slots -----------------------------------------------------------------------------
def default_sources(task: str) -> tuple[str | None, str | None]:
    """Slot A: the bundled DiffLlama for the task; slot B: the bundled Llama."""
    names = list(bundled_models(task))
    pick = lambda prefix: next((n for n in names if n.startswith(prefix)), names[0] if names else None)  # noqa: E731
    return pick("diffllama"), pick("llama")


def describe(model) -> str:
    info = model.info
    lam = "λ per layer: yes" if info.has_lambda else "λ: none (standard attention)"
    return (f"**{info.arch}** · {info.task} · {info.num_parameters / 1e6:.2f} M parameters · "
            f"{info.num_layers} layers × {info.num_heads} {'differential ' if info.has_lambda else ''}heads · "
            f"{lam} · {info.device} / {info.dtype}")


_SLOTS: dict[int, tuple[str, gr.Markdown, gr.State]] = {}  # slot dropdown id -> (task, info line, source loaded)
# Real checkpoints of one shape (hidden 2048, 16 layers, 32 query / 8 KV heads), a DiffLlama against a Llama:
# (label, hub id) per task. Downloaded only when chosen; bf16 on a GPU.
PRESETS = {"generation": [("kajuma/DiffLlama-0.3B-handcut (hub: a real DiffLlama, ≈ 1.2 B parameters)",
                           "kajuma/DiffLlama-0.3B-handcut"),
                          ("meta-llama/Llama-3.2-1B (hub, gated: needs a token)", "meta-llama/Llama-3.2-1B")]}


def preset_choices(task: str) -> list[tuple[str, str]]:
    """The preset real checkpoints for ``task`` that this server's allow-lists let it load."""
    allowed = []
    for label, hub_id in PRESETS.get(task, []):
        try:
            resolve_source(hub_id, task)  # the allow-lists only: nothing is fetched
        except LoadError:
            continue
        allowed.append((label, hub_id))
    return allowed


def model_slots(task: str):
    """Two model pickers (bundled names, the preset real checkpoints where allowed, or any path / hub
    id) with an info line under each. Returns (dropdown A, dropdown B) whose values are the sources each
    run uses; ``Panel.run_on`` wires their loading to the tab's main button."""
    choices = list(bundled_models(task)) + preset_choices(task)
    default_a, default_b = default_sources(task)
    dropdowns = []
    with gr.Row():
        for slot, default in (("A", default_a), ("B", default_b)):
            with gr.Column():
                dropdown = gr.Dropdown(choices=choices, value=default, allow_custom_value=True,
                                       label=f"Model {slot} (bundled, or a local directory / hub id)")
                info = gr.Markdown(elem_classes=["model-info"])
                previous = gr.State(default)
                _SLOTS[dropdown._id] = (task, info, previous)
                dropdowns.append((dropdown, info, previous))
    return dropdowns


def load_slots(button: gr.Button, inputs: list) -> None:
    """A model typed into one of the slots among ``inputs`` loads at once, in the load lane (not the
    model queue); ``button`` stays disabled until it is ready."""
    for dropdown in inputs:
        if dropdown._id in _SLOTS:
            task, info, previous = _SLOTS[dropdown._id]
            dropdown.change(lambda: gr.update(interactive=False), None, button, queue=False, api_visibility="private") \
                .then(load_slot(task), [dropdown, previous], [dropdown, previous, info, button],
                      concurrency_id=LOAD_QUEUE, concurrency_limit=LOAD_CONCURRENCY, api_visibility="private")


def load_slot(task: str):
    def load(source: str, previous: str, progress=gr.Progress()):
        ready = gr.update(interactive=True)
        if not source:
            return previous, previous, gr.update(), ready
        progress(0.1, desc=f"loading {source}")
        try:
            model = CACHE.get(source, task)
        except ValueError as error:  # keep the previous model, say why
            log.info("slot load refused: %s", error)
            gr.Warning(for_html(f"{error}. Keeping {previous}."))  # a toast is HTML; the source is the visitor's
            return previous, previous, gr.update(), ready
        return source, source, describe(model), ready
    return load


def slot_info(task: str):
    """Loads the slots' models at page load (the defaults, or a link's), so the info lines are filled;
    a source that cannot be loaded says why in its line (Markdown: the visitor's source made inert)."""
    def line(source: str | None) -> str:
        if not source:
            return "no bundled model for this task"
        try:
            return describe(CACHE.get(source, task))
        except ValueError as error:
            return f"⚠ {for_markdown(message(error, 'slot_info'))}"

    def fill(source_a: str, source_b: str):
        return line(source_a), line(source_b)
    return fill


# --- display helpers --------------------------------------------------------------------------
def markdown_code(text: str) -> str:
    """Plain text (a token's display form) as a Markdown code span, so nothing in it is read as markup:
    fenced by more backticks than any run of them in the text (CommonMark's rule), so no backtick in
    it can close the span early."""
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}" if fence != "`" else f"`{text}`"


def plain(record) -> dict:
    """A record as JSON-able data (numpy arrays as lists; traces left out)."""
    def convert(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if k != "trace"}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value
    return convert({k: v for k, v in asdict(record).items() if k != "trace"} if is_dataclass(record) else record)


# --- exports ----------------------------------------------------------------------------------
# Exports are written only when a visitor asks (an export button); they and the overview's images go
# to one folder the app owns. Gradio copies a returned file into its own cache (cleaned by the
# Blocks' delete_cache, and at shutdown), so the folder's files are needed only for moments: older
# ones go at the next write a second or more after the last sweep, all of them at exit.
EXPORTS = Path(os.environ.get("DIFFLLAMA_LENS_EXPORT_DIR", Path(tempfile.gettempdir()) / "diffllama-lens-exports"))
EXPORT_KEEP_SECONDS = 60


EXPORT_SWEEP_SECONDS = 1  # older exports are looked for at most this often (an overview writes dozens of images)
_last_sweep = [0.0]


def _export_path(name: str, suffix: str) -> Path:
    EXPORTS.mkdir(parents=True, exist_ok=True)
    if time.time() - _last_sweep[0] > EXPORT_SWEEP_SECONDS:  # not per file: each sweep stats every export
        _last_sweep[0] = time.time()
        for old in EXPORTS.iterdir():
            try:
                if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # another request cleaned it first
                pass
    folder = EXPORTS / uuid.uuid4().hex[:12]  # one folder per export: the file keeps its readable name
    folder.mkdir()
    return folder / f"{name}{suffix}"


def remove_exports() -> None:
    shutil.rmtree(EXPORTS, ignore_errors=True)


atexit.register(remove_exports)


def export_json(name: str, data: dict, provenance: Provenance) -> str:
    """``data`` as JSON, with what it was computed from as its first key, "provenance"."""
    path = _export_path(name, ".json")
    path.write_text(json.dumps({"provenance": asdict(provenance), **data}, indent=1))
    return str(path)


def image_file(pixels: np.ndarray, name: str) -> str:
    """An RGB image [h, w, 3] as a file of its own for a gallery: gradio rewrites the cached file of an
    image array in place, so two visitors shown the same picture at once could download a half-written
    one; a file is copied into its cache atomically instead."""
    path = _export_path(name, ".png")
    Image.fromarray(pixels.astype(np.uint8)).save(path, compress_level=1)  # a thumbnail: speed over bytes
    return str(path)


def export_csv(name: str, header: list[str], rows: list[list], provenance: Provenance) -> str:
    """A table as CSV, after what it was computed from as "# key: value" lines (pandas:
    ``read_csv(path, comment="#")``; text fields are quoted, so a "#" in a token stays in it)."""
    path = _export_path(name, ".csv")
    with open(path, "w", newline="") as f:
        f.writelines(f"# {line}\n" for line in provenance.lines())
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)
