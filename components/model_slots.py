"""Model slots A and B of a tab: the pickers, their info lines, loading a typed model in the load lane,
and the one cache of loaded models (read-only; a visitor's runs live in ``run_store``, nothing else per visitor)."""

from __future__ import annotations

import logging

import gradio as gr

from diffllama import LoadError
from diffllama.registry import ModelCache, bundled_models, resolve_source

from .errors import message
from .model_queue import LOAD_CONCURRENCY, LOAD_QUEUE
from .safe_text import for_html, for_markdown

log = logging.getLogger("diffllama_lens")
CACHE = ModelCache()


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


# Real checkpoints of one shape (hidden 2048, 16 layers, 32 query / 8 KV heads), a DiffLlama against a Llama:
# (label, hub id) per task. Downloaded only when chosen; bf16 on a GPU.
PRESETS = {"generation": [("kajuma/DiffLlama-0.3B-handcut (hub: a real DiffLlama, ≈ 1.2 B parameters)",
                           "kajuma/DiffLlama-0.3B-handcut"),
                          ("meta-llama/Llama-3.2-1B (hub, gated: needs a token)", "meta-llama/Llama-3.2-1B")]}


_SLOTS: dict[int, tuple[str, gr.Markdown, gr.State]] = {}  # slot dropdown id -> (task, info line, source loaded)


def slot_task(component) -> str | None:
    """The task whose model slot ``component`` is, or None when it is no model slot."""
    slot = _SLOTS.get(getattr(component, "_id", None))
    return slot[0] if slot else None


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

