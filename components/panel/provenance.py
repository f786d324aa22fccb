"""What a view of a run was computed from (models, inputs, the view's controls) and the link that
reopens it: stamped on every figure a view draws and written at the head of every export."""

from __future__ import annotations

import plotly.graph_objects as go
from gradio import route_utils

from diffllama.provenance import Provenance, provenance

from .. import figures, links


def page_root(request) -> str:
    """The app's public address (behind a proxy too, as gradio works it out for file URLs), for links;
    "" (links relative to the page) when called without a request."""
    inner = getattr(request, "request", None)
    if inner is None:
        return ""
    return route_utils.get_root_url(inner, route_utils.get_api_call_path(inner), getattr(inner.app, "root_path", None))


def run_inputs(run) -> dict:
    """The run's main action's arguments by name: every tab's names its models source_a and source_b."""
    return {**run.inputs, **{f"source_{slot.lower()}": source for slot, source in run.models.items()}}


def view_provenance(request, run, show: str, **controls) -> Provenance:
    """What a view of ``run`` is computed from: its models, inputs, layer / head / map when the view
    has them, and the link that reopens it (``show`` with ``controls``; empty controls left out)."""
    controls = {name: value for name, value in controls.items() if value is not None}
    try:
        link = links.url(page_root(request), links.ViewLink(run.task, run_inputs(run), controls, show))
    except ValueError as error:  # inputs too long for a URL: the provenance says so instead of a link
        link = f"none: {error}"
    return provenance(run.models, run.inputs, controls.get("layer"), controls.get("head"), controls.get("kind"), link)


def stamp(value, record: Provenance):
    """A figure stamped with ``record`` (``figures.provenance_note``); anything else as it is."""
    return figures.provenance_note(value, record) if isinstance(value, go.Figure) else value
