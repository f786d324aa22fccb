"""Links to a view (``components.links``) for the panel: each control's link field, the
``/<tab>_link`` endpoint behind "Copy link to this view", ``/read_link``, and the page load that
opens a link. A link's layer and head are checked against the models it would load, not against the
sliders' placeholder ranges."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from urllib.parse import parse_qsl, urlsplit

import gradio as gr

from .. import links
from ..errors import message, user_errors
from ..model_slots import CACHE
from ..safe_text import for_html
from .provenance import page_root

COPY_SCRIPT = "(link) => { if (link && navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {}); }"
BOUNDS = {"layer": "num_layers", "heat_layer": "num_layers", "head": "num_heads"}  # control -> the models' count it indexes


def link_field(component) -> links.Field:
    """What a link may set ``component`` to: its type, and its range or choices."""
    if isinstance(component, gr.Checkbox):
        return links.Field(bool)
    if isinstance(component, (gr.Radio, gr.Dropdown)) and not getattr(component, "allow_custom_value", False):
        return links.Field(str, choices=tuple(value for _, value in component.choices))
    if isinstance(component, (gr.Slider, gr.Number)):
        whole = getattr(component, "precision", None) == 0 or isinstance(component, gr.Slider) and all(
            float(bound).is_integer() for bound in (component.minimum, component.step))
        return links.Field(int if whole else float, component.minimum, component.maximum)
    return links.Field(str)  # text, and a model slot (any source)


def check_against_models(link: links.ViewLink, defaults: dict[str, str]) -> None:
    """Refuses a link whose layer or head the models it would load (its sources, else the tab's
    defaults ``defaults``) do not have, naming the parameter and the models' ranges."""
    sources = {slot: link.inputs.get(f"source_{slot.lower()}", defaults.get(slot)) for slot in "AB"}
    infos = {slot: CACHE.get(source, link.tab).info for slot, source in sources.items() if source}
    for name, count in BOUNDS.items():
        if name in link.controls and infos:
            largest = max(getattr(info, count) for info in infos.values())
            try:
                links.Field(int, 0, largest - 1).check(name, link.controls[name])
            except ValueError as error:
                models = ", ".join(f"{slot} {sources[slot]}: {getattr(i, count)} {count[4:]}" for slot, i in infos.items())
                raise ValueError(f"{error} (the link's models — {models})") from None


def link_maker(spec: links.LinkSpec, linked: dict[str, tuple[str, ...]]):
    """The ``/<tab>_link`` endpoint of a tab whose links ``spec`` describes; ``linked[show]``: the
    controls a link to that view carries."""

    @user_errors
    def view_link(request: gr.Request, *values):
        """The link that reopens this tab with these inputs (its main action's, in order), runs it and
        opens the view ``show`` (the last value) with these controls (the panel's, in order); refused
        when the link would be too long. Empty controls (no span) are left out."""
        *values, show = values
        inputs = dict(zip(spec.inputs, values))
        controls = dict(zip(spec.controls, values[len(spec.inputs):]))
        chosen = {name: controls[name] for name in linked[show] if controls[name] not in (None, "")}
        return links.url(page_root(request), links.ViewLink(spec.tab, inputs, chosen, show))

    # the endpoint's parameters named as the link's (text, source_a, …, layer, …, show), not param_0, param_1, …
    Parameter = inspect.Parameter
    view_link.__signature__ = inspect.Signature(
        [Parameter("request", Parameter.POSITIONAL_ONLY, annotation=gr.Request)]
        + [Parameter(name, Parameter.POSITIONAL_OR_KEYWORD) for name in (*spec.inputs, *spec.controls, "show")])
    return view_link


def read_checked(pairs, panels: list) -> links.ViewLink | None:
    """The link in a page's query parameters, every value checked (the layer and head against the models)."""
    link = links.read(pairs, {panel.tab: panel.spec for panel in panels})
    if link is not None:
        panel = next(p for p in panels if p.tab == link.tab)
        check_against_models(link, {slot: panel.inputs[f"source_{slot.lower()}"].value for slot in "AB"})
    return link


def open_links(demo: gr.Blocks, tabs: gr.Tabs, panels: list):
    """A page opened with a link (``?tab=…``): select the tab and fill its inputs; the tab's panel then
    runs it and opens the view. A bad link is refused with a message, and the page works as usual.
    Also ``/read_link``: what a link holds, as the arguments of the calls that reproduce it. Returns
    the page-load event."""
    inputs = [(panel, name, component) for panel in panels for name, component in panel.inputs.items()]

    def open_link(request: gr.Request):
        try:
            link = read_checked(request.query_params.multi_items(), panels)
        except ValueError as error:  # a warning, not an error: the page's inputs carry no error badge
            gr.Warning(f"This link cannot be opened: {for_html(message(error, 'open_link'))}. The app works as usual.",
                       duration=None)
            link = None
        mine = lambda panel: link is not None and panel.tab == link.tab  # noqa: E731
        return ([gr.Tabs(selected=link.tab) if link else gr.update()]
                + [gr.update(value=link.inputs[name]) if mine(panel) and name in link.inputs else gr.update()
                   for panel, name, _ in inputs]
                + [link if mine(panel) else None for panel in panels])

    @user_errors
    def view_of_link(link: str) -> dict:
        """What a link to a view holds: ``tab``, ``inputs`` (the tab's main action's arguments by
        name, e.g. ``/classify``'s), ``show`` (the view) and ``controls`` (that view's arguments by
        name, e.g. ``/classify_attention``'s layer, head, kind, size), every value checked — the layer
        and head against the models the link loads."""
        query = urlsplit(link).query if "?" in link else link  # a whole link, or its query alone
        view = read_checked(parse_qsl(query, keep_blank_values=True), panels)
        if view is None:
            raise ValueError("this address holds no link to a view: a link has ?tab=… and the tab's inputs")
        return asdict(view)

    gr.api(view_of_link, api_name="read_link")
    return demo.load(open_link, None, [tabs, *(component for *_, component in inputs), *(p.link for p in panels)],
                     api_visibility="private")
