"""Provenance stamped on a figure: small grey lines that a saved PNG keeps, and the whole record in
the figure's JSON."""

from __future__ import annotations

import dataclasses

import plotly.graph_objects as go

from .labels import plotly_text, short

PROVENANCE_FONT = 8  # px: small enough to stay out of the way, legible in a saved PNG
PROVENANCE_LINE = 64  # characters: fits a figure a third of the page wide


def stamp_lines(provenance) -> list[str]:
    """The stamp's text, pieces joined by " · " into lines of at most ``PROVENANCE_LINE`` characters."""
    pieces = [f"{slot}: {short(source, 40)}" for slot, source in provenance.models.items()]  # meta has them whole
    pieces += [f"input sha256 {provenance.input_sha256}"] + [
        f"{name} {value}" for name, value in (("layer", provenance.layer), ("head", provenance.head),
                                              ("map", provenance.kind)) if value is not None]
    pieces += [provenance.created] + [f"{name} {version}" for name, version in provenance.versions.items()]
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 3 + len(piece) > PROVENANCE_LINE:
            lines.append(piece)
        else:
            lines[-1] += f" · {piece}"
    return lines


def provenance_note(figure: go.Figure | None, provenance) -> go.Figure | None:
    """``figure`` stamped (in place) with where it came from (a ``diffllama.provenance.Provenance``), and the
    whole record, link included, in ``layout.meta["provenance"]`` of the figure's JSON. A map names
    its own kind (``layout.meta["kind"]``: A1, A2 and A1 − λ·A2 panels of one view each say theirs).
    The stamp goes where no label of the page lies over it: under a map's tick labels (its bottom
    margin is known: ``maps.label_room``), else at the top right with the title moved below it
    (the top-left corner is under gradio's label). None passes through (a view not shown)."""
    if figure is None:
        return None
    layout = figure.layout
    meta = dict(layout.meta or {})
    if "kind" in meta:
        provenance = dataclasses.replace(provenance, kind=meta["kind"])
    lines = stamp_lines(provenance)
    height = round(len(lines) * PROVENANCE_FONT * 1.4) + 6  # plotly sets a line of text at about 1.3× its font size
    note = dict(text="<br>".join(map(plotly_text, lines)), xref="paper", yref="paper", x=1, xanchor="right", align="right",
                showarrow=False, font=dict(size=PROVENANCE_FONT, color="#868e96"))
    if layout.xaxis.automargin is False:
        bottom = layout.margin.b if layout.margin.b is not None else 80
        note.update(y=0, yanchor="top", yshift=-bottom)
        changes = dict(margin=dict(b=bottom + height))
    else:
        top = (layout.margin.t if layout.margin.t is not None else 100) + height
        note.update(y=1, yanchor="top", yshift=top - 2)
        changes = dict(margin=dict(t=top), title=dict(yref="container", y=1, yanchor="top", pad=dict(t=height + 2)))
    if layout.height:  # the plot keeps its size
        changes["height"] = layout.height + height
    figure.add_annotation(note)
    figure.update_layout(changes, meta={**meta, "provenance": dataclasses.asdict(provenance)})
    return figure
