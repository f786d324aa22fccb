"""The shared panel of a tab: its views (one ``ViewSpec`` each) wired to the tab's run. One runner
for every tab: the tab's main action runs on its button (or once, for a page opened with a link to
the tab); after it the stale views are cleared and fitted to the models, the link's controls applied,
the maps drawn, and the link's view opened. Editing the tab's inputs marks the views as the last
run's."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import gradio as gr

from .. import links
from ..model_queue import model_queue
from ..model_slots import CACHE, load_slots
from ..run_store import current
from ..safe_text import for_markdown
from .sharing import COPY_SCRIPT, link_field, link_maker
from .spec import ViewSpec, fitted

PRIVATE = dict(api_visibility="private")
QUICK = dict(queue=False, **PRIVATE)  # checks and layout: outside the queue, never a model-queue job


def hidden_stop(why: str) -> gr.Error:
    """Ends a chain of events quietly: the ``.success`` steps after it do not run, and nothing is shown."""
    return gr.Error(why, visible=False, print_exception=False)


def claim_link(link, claimed: bool) -> bool:
    """Goes on only when the page was opened with a link to this tab, and only once a page: the link's
    state may be reported changed twice on a busy machine (seen as two runs of the linked tab), so the
    first check claims the link (its output) and any later one stops."""
    if link is None:
        raise hidden_stop("the page was opened without a link to this tab")
    if claimed:
        raise hidden_stop("this page's link has run its tab already")
    return True


@dataclass(frozen=True)
class Runs:
    """A tab's run events (its button's, and a link's on page load): what follows a run follows each."""

    events: tuple

    def success(self, fn, inputs=None, outputs=None, **settings) -> "Runs":
        return Runs(tuple(event.success(fn, inputs, outputs, **settings) for event in self.events))


def edited_note(run, values: dict) -> str:
    """Said above the views when the tab's inputs differ from its last run's."""
    changed = [name for name, value in values.items() if name in run.inputs and run.inputs[name] != value
               or name.startswith("source_") and run.models.get(name[-1].upper()) != value]
    if not changed:
        return ""
    return (f"⚠ The views below belong to the last run; its {', '.join(for_markdown(n) for n in changed)} "
            "has been edited since. Run the tab again to see the views of the new input.")


@dataclass
class Panel:
    """A tab's views and the controls links carry (``controls``: by parameter name)."""

    specs: list[ViewSpec]
    run_key: gr.State
    tab: str  # the tab's id (its task), which links name
    name: str  # the prefix of the views' API endpoints
    controls: dict
    share: tuple  # ("Copy link to this view" button, the view it opens, the link box)
    edited: gr.Markdown
    link: gr.State = field(default_factory=lambda: gr.State(None))  # the page's link, when it is this tab's
    opening: gr.State = field(default_factory=lambda: gr.State(None))  # the view a run opens for the link, or None
    opened: gr.State = field(default_factory=lambda: gr.State(False))  # the link's run is done: later runs are the user's
    claimed: gr.State = field(default_factory=lambda: gr.State(False))  # the link's run has started (``claim_link``)
    inputs: dict = field(default_factory=dict)  # the main action's inputs by parameter name (``run_on``)
    spec: links.LinkSpec | None = None

    @property
    def views(self) -> dict[str, ViewSpec]:
        return {spec.name: spec for spec in self.specs}

    def linked_controls(self, show: str) -> tuple[str, ...]:
        """The controls a link to ``show`` carries: the maps' (drawn first), the heat's, then the view's."""
        names = [*self.views["maps"].controls, *(n for n in self.controls if n.startswith("heat_")),
                 *self.views[show].controls]
        return tuple(dict.fromkeys(names))

    def run_on(self, button: gr.Button, fn, inputs: list, outputs: list, api_name: str) -> Runs:
        """Wire a tab's main action (an API endpoint, in the model queue) to its button and to a page
        opened with a link to the tab; returns the events that follow a run, once the views are ready."""
        load_slots(button, inputs)
        clicked = button.click(fn, inputs, outputs, api_name=api_name, **model_queue())
        # a page load sets every tab's link state (gradio may report it changed with no link): the check
        # runs outside the queue, so a page opened without a link to this tab sends no model-queue job
        linked = self.link.change(claim_link, [self.link, self.claimed], self.claimed, **QUICK) \
            .success(fn, inputs, outputs, **PRIVATE, **model_queue())
        self.inputs = dict(zip(inspect.signature(fn).parameters, inputs))
        ready = self.refresh_on(Runs((clicked, linked)))
        self.share_links(inputs)
        for component in inputs:
            component.change(self.mark_edited, [self.run_key, *inputs], self.edited, **QUICK)
        return ready

    def refresh_on(self, ran) -> Runs:
        """After ``ran`` (a run, or another window of the input): the views cleared, fitted and drawn
        again (``after_run``, ``open_views``); returns the events once they are ready."""
        ready = Runs(ran.events if isinstance(ran, Runs) else (ran,)).success(
            self.after_run(), [self.run_key, self.link, self.opened, *self.controls.values()], self.after_run_outputs(), **QUICK)
        self.open_views(ready)
        return ready

    def after_run_outputs(self) -> list:
        return [*self.stale(), *self.controls.values(), *(s.box for s in self.specs if s.box), self.opening,
                self.opened, self.edited]

    def stale(self) -> list:
        """Every output a new run makes stale (the views' outputs that are not controls)."""
        controls = {id(c) for spec in self.specs for c in spec.controls.values()}
        return list({id(c): c for spec in self.specs for c in spec.outputs.values() if id(c) not in controls}.values())

    def after_run(self):
        """The views after a run: stale ones cleared and fitted to the run's models; after the run a
        page's link started, its controls set and its view's accordion opened (once)."""
        names = list(self.controls)

        def ready(tab: str, request: gr.Request, link, opened: bool, *values) -> dict:
            link = None if opened else link
            controls = dict(zip(names, values)) | (link.controls if link else {})
            updates = {c: [] if isinstance(c, gr.State) else gr.update(value=None) for c in self.stale()}
            updates |= {self.edited: "", self.opening: link.show if link else None, self.opened: opened or link is not None}
            for component, update in fitted(self.specs, current(request, tab), controls["slot"]).items():
                updates[component] = {**update, "value": None}
            if link is not None:
                updates |= {self.controls[n]: gr.update(value=v) for n, v in link.controls.items()}
                updates |= {s.box: gr.update(open=True) for s in self.specs if s.name == link.show and s.box}
            return updates
        return ready

    def open_views(self, ready: Runs) -> None:
        """The maps after every run; the link's own view after a link's run."""
        maps = self.views["maps"]
        drawn = maps.run_after(ready, self.run_key, **model_queue())
        for spec in self.specs:
            if spec.linked and spec.name != "maps":
                spec.run_after(drawn.success(_opens(spec.name), self.opening, None, **QUICK), self.run_key, **model_queue())

    def mark_edited(self, tab: str, request: gr.Request, *values) -> str:
        try:
            run = current(request, tab)
        except ValueError:  # no run: the views are empty anyway
            return ""
        return edited_note(run, dict(zip(self.inputs, values)))

    def share_links(self, inputs: list) -> None:
        """"Copy link to this view" and its endpoint ``/<name>_link``."""
        self.spec = links.LinkSpec(self.tab, {n: link_field(c) for n, c in self.inputs.items()},
                                   {n: link_field(c) for n, c in self.controls.items()})
        button, show, box = self.share
        linked = {view: self.linked_controls(view) for view in links.VIEWS}
        button.click(link_maker(self.spec, linked), [*inputs, *self.controls.values(), show], box, api_name=f"{self.name}_link") \
            .success(None, box, None, js=COPY_SCRIPT, **PRIVATE)

    def fit_to_models(self, sources: list, infos: list) -> None:
        """Size the layer and head sliders (the heat's too) to the models once a slot's model is loaded
        (its info line changes); a page's link keeps the values it names."""
        sized = {n: c for n, c in self.controls.items() if n in ("layer", "head", "heat_layer")}
        for info in infos:
            info.change(lambda link, *chosen: slider_sizes(self.tab, list(sized), link, *chosen), [self.link, *sources],
                        list(sized.values()), **PRIVATE)


def _opens(view: str):
    """Goes on only when the run just made opens ``view`` for the page's link."""
    def check(opening):
        if opening != view:
            raise hidden_stop(f"this run opens {opening}, not {view}")
    return check


def slider_sizes(task: str, names: list[str], link, *sources: str) -> list:
    """Updates of the sliders ``names`` (layer sliders at the middle layer, the head at 0, or a link's
    values), sized to the larger of the loaded models ``sources``."""
    try:
        infos = [CACHE.get(source, task).info for source in sources if source]
    except Exception:  # noqa: BLE001 - the slot reports its own load error; keep the sliders
        return [gr.update() for _ in names]
    layers, heads = max(i.num_layers for i in infos), max(i.num_heads for i in infos)
    chosen = link.controls if link is not None else {}
    return [gr.update(maximum=heads - 1 if n == "head" else layers - 1,
                      value=chosen.get(n, 0 if n == "head" else layers // 2)) for n in names]
