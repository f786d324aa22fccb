"""What the Interventions views share: a slot's readout (the answer first), the layer × head / position
heat map on a diverging scale, the figures' layout and their provenance stamp."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from diffllama.provenance import provenance

from .. import figures
from ..safe_text import for_markdown


def readout(slot: str, source: str, result) -> str:
    """The answer first (before → after), then the rest, as Markdown (visitor text escaped)."""
    lines = [f"**Model {slot}** ({for_markdown(source)}): {result.description}"]  # the description is the app's own words and numbers
    answer = result.answer
    if answer is not None:
        lines.append(f"- answer {for_markdown(answer.token)} ({answer.chosen}): probability "
                     f"{answer.probability[0]:.4f} → **{answer.probability[1]:.4f}**, rank {answer.rank[0]} → "
                     f"**{answer.rank[1]}**, logit {answer.logit[0]:.2f} → {answer.logit[1]:.2f}")
    outputs = result.outputs
    worst = int(np.argmax(outputs.kl))
    lines.append(f"- {sum(outputs.changed)} of {len(outputs.changed)} top predictions change; mean KL "
                 f"{np.mean(outputs.kl):.3g} nats, largest {outputs.kl[worst]:.3g} at position {worst} "
                 f"{for_markdown(outputs.tokens[worst])}")
    return "\n".join(lines)


def stamp(figure: go.Figure, sources: dict, inputs: dict) -> go.Figure:
    return figures.provenance_note(figure, provenance(sources, inputs))


def heat_trace(values: np.ndarray, x: list[int], labels: list[str], colour_title: str, limit: float | None = None,
                showscale: bool = True) -> go.Heatmap:
    """Rows = layers, columns ``x`` (heads or positions, ``labels`` for hover), on a diverging scale centred at 0;
    NaN (not measured, or undefined) left blank."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    limit = limit or max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-6)
    return go.Heatmap(z=np.where(np.isfinite(values), values, None), x=x, y=list(range(values.shape[0])),
                      colorscale=figures.DIVERGING, zmin=-limit, zmax=limit, zmid=0, showscale=showscale,
                      customdata=np.array([[figures.plotly_text(label) for label in labels]] * values.shape[0], dtype=object),
                      colorbar=dict(title=colour_title), hovertemplate="layer %{y} · %{customdata}<br>%{z:.3f}<extra></extra>")


def layout(figure: go.Figure, title: str) -> go.Figure:
    figure.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
    figure.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=80, b=10))
    return figure
