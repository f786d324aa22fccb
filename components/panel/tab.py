"""One runner for every task tab: each model of the tab's slots called on the input, the run kept for
the views, and a tab's parts wired to its panel the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from .. import run_store
from ..model_slots import CACHE
from .runner import Panel, Runs


@dataclass
class Tab:
    """What the app needs of a tab: its model slots and their info lines (filled at page load), the
    function that fills them, and its panel (links open through it)."""

    sources: tuple[gr.Dropdown, gr.Dropdown]
    infos: tuple[gr.Markdown, gr.Markdown]
    fill: Callable
    panel: Panel


def run_models(request, task: str, sources: dict[str, str], call: Callable, record: Callable) -> dict:
    """``call(model)`` for each slot's model (A, then B); ``record(results)`` makes the ``run_store.Run``
    the views read, kept only when every model finished. Returns the results by slot."""
    with run_store.recording(request, task) as keep:
        results = {slot: call(CACHE.get(source, task)) for slot, source in sources.items()}
        keep(record(results))
    return results


def wire(panel: Panel, button: gr.Button, fn: Callable, inputs: list, outputs: list, api_name: str,
         slots: list, fill: Callable, heat=None) -> tuple[Runs, Tab]:
    """The tab's main action on its button (and a link), its heat redrawn after each run, its sliders
    sized to its models; ``slots``: the two (dropdown, info line, loaded source) of ``model_slots``."""
    (source_a, info_a, _), (source_b, info_b, _) = slots
    ready = panel.run_on(button, fn, inputs, outputs, api_name)
    if heat is not None:
        heat.wire(panel.run_key, ready)
    panel.fit_to_models([source_a, source_b], [info_a, info_b])
    return ready, Tab((source_a, source_b), (info_a, info_b), fill, panel)
