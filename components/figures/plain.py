"""Figures built as plain dictionaries: plotly's property validation (most of a map's building time)
is skipped on the hot paths, and the same JSON reaches the browser (``gr.Plot`` sends
``figure.to_json()``). Only settings plotly.js reads as written go in: colour scales written out
(``scales.COLOUR_SCALES``), no names plotly.py would have expanded."""

from __future__ import annotations

import plotly.graph_objects as go


def plain_figure(data: list[dict], layout: dict) -> go.Figure:
    """A ``go.Figure`` of trace and layout dictionaries, taken as they are (no validation)."""
    return go.Figure(dict(data=data, layout=layout), _validate=False)

