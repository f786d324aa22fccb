"""One typed spec per view: its controls, its outputs by name, its button and endpoint, and which
outputs belong to which model. Everything else is derived from the specs: the handlers' outputs (a
view returns its results by name), the visibility of each model's outputs, what a run makes stale,
what links carry and what the provenance stamped on a figure names."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from ..run_store import current
from .provenance import stamp, view_provenance
from .slots import shown_slots


@dataclass(frozen=True)
class Shown:
    """When an output is visible: while its model is shown (``slot``; None: either), and only for a
    model with λ (``differential``)."""

    slot: str | None = None
    differential: bool = False


@dataclass
class Action:
    """Another button of a view (or another component's ``event``: a page number's submit): ``fn(tab,
    *inputs, request)`` returns results by output name; the view redraws after it when ``redraw`` (it
    changed the view's controls)."""

    button: gr.components.Component
    fn: Callable
    inputs: list
    outputs: dict[str, gr.components.Component]
    api: str
    redraw: bool = False
    event: str = "click"


@dataclass
class ViewSpec:
    """A view: ``fn(tab, *controls, request)`` returns its results by output name."""

    name: str  # "maps", "zoom", …: what a link's ``show`` names, and the view's provenance
    fn: Callable
    controls: dict[str, gr.components.Component]  # by ``fn``'s parameter names, in its order
    outputs: dict[str, gr.components.Component]  # by the names ``fn`` returns
    button: gr.Button
    api: str  # the endpoint is /<panel name>_<api>
    box: gr.Accordion | None = None  # opened when a link opens the view
    shown: dict[str, Shown] = field(default_factory=dict)  # output name -> when it is visible
    linked: bool = True  # a link can open it (``links.VIEWS``)
    js: str | None = None  # runs in the page before ``fn`` (the zoom reads the dragged box)
    actions: list[Action] = field(default_factory=list)

    def handler(self) -> Callable:
        """``fn`` for gradio: its named results to their components, every figure stamped with the
        view's provenance (the run, these controls, and the link that reopens the view)."""
        signature = inspect.signature(self.fn)

        @functools.wraps(self.fn)
        def handle(*args, **kwargs):
            results = self.fn(*args, **kwargs)
            given = signature.bind(*args, **kwargs).arguments
            request = given.get("request")
            controls = {name: given.get(name) for name in self.controls} if self.linked else {}
            record = view_provenance(request, current(request, given["tab"]), self.name if self.linked else "maps",
                                     **controls)
            return {self.outputs[name]: stamp(value, record) for name, value in results.items()}
        return handle

    def wire(self, run_key: gr.State, prefix: str, **settings) -> None:
        """The button runs the view on the tab's last run, and so does each action that changes its
        controls (after the action's own function)."""
        self.button.click(self.handler(), [run_key, *self.controls.values()], list(self.outputs.values()),
                          js=self.js, api_name=f"{prefix}_{self.api}", **settings)
        for action in self.actions:
            done = getattr(action.button, action.event)(named(action.fn, action.outputs), [run_key, *action.inputs],
                                       list(action.outputs.values()), api_name=f"{prefix}_{action.api}", **settings)
            if action.redraw:
                self.run_after(done, run_key, **settings)

    def run_after(self, event, run_key: gr.State, **settings):
        """The view, again, after ``event`` (a run, or a click elsewhere that changed its controls)."""
        return event.success(self.handler(), [run_key, *self.controls.values()], list(self.outputs.values()),
                             api_visibility="private", **settings)


def named(fn: Callable, outputs: dict) -> Callable:
    """``fn`` for gradio: its results by name to their components."""
    @functools.wraps(fn)
    def handle(*args, **kwargs):
        return {outputs[name]: value for name, value in fn(*args, **kwargs).items()}
    return handle


def fitted(specs: list[ViewSpec], run, slot: str) -> dict:
    """Updates of every model's outputs to the shown models: visible or not. A tab without a run has
    nothing to fit: no update."""
    shown = shown_slots(run, slot)
    differential = [s for s in shown if run.traces[s].lambdas is not None]
    updates = {}
    for spec in specs:
        for name, when in spec.shown.items():
            slots = [when.slot] if when.slot else shown
            visible = any(s in (differential if when.differential else shown) for s in slots)
            updates[spec.outputs[name]] = gr.update(visible=visible)
    return updates


def shown_outputs(specs: list[ViewSpec]) -> list:
    """Every output whose visibility follows the shown models (what ``fitted`` updates)."""
    return [spec.outputs[name] for spec in specs for name in spec.shown]


def fit(specs: list[ViewSpec]) -> Callable:
    """The handler of a change of the shown models: ``fitted``, or no change before the tab's first run
    (an update per output: gradio reads an empty dict as one value for all of them)."""
    def layout(tab: str, slot: str, request: gr.Request = None) -> dict:
        try:
            run = current(request, tab)
        except ValueError:  # no run yet: nothing to fit
            return {component: gr.update() for component in shown_outputs(specs)}
        return fitted(specs, run, slot)
    return layout
