"""A click on a token makes it the query: in the token heat, or on a map's (or a zoom's) tick labels
or cells. The clicked token becomes the heat's query and the compare view's query token; the heat is
redrawn, and so is the comparison when it was drawn."""

from __future__ import annotations

import gradio as gr

from .. import figures
from ..errors import user_errors
from ..model_queue import model_queue
from .runner import QUICK, hidden_stop
from .spec import ViewSpec

HINT = ("Click a token — on a map's axis, a map's cell (its query row) or in the token heat — to make it the query "
        "token of the heat and of the A vs B comparison.")


def picked_token(event: gr.SelectData) -> int:
    """The clicked token's position: the select event's index."""
    position = event.index
    if isinstance(position, bool) or not isinstance(position, int | float) or position < 0 or position != int(position):
        raise ValueError(f"a clicked token's position must be a whole number ≥ 0, not {position!r}")
    return int(position)


def pick(count: int):
    """The handler of a token click: the position, once for each of ``count`` controls it sets."""
    @user_errors
    def picked(event: gr.SelectData) -> int | tuple[int, ...]:
        position = picked_token(event)
        return (position,) * count if count > 1 else position
    return picked


def _drawn(stats) -> None:
    """Goes on only when the comparison has been drawn since the run (its chart is there)."""
    if stats is None:
        raise hidden_stop("the comparison is not drawn: the new query token waits for its button")


def build(name: str, plot_ids: list[str]) -> gr.HTML:
    """The hint line, whose script reads token clicks on the plots ``plot_ids`` (element ids)."""
    return gr.HTML(f'<div style="font-size:0.85em;color:#495057">{HINT}</div>', js_on_load=figures.token_pick_js(name, plot_ids),
                   elem_id=f"{name}-token-pick")


def wire(picker: gr.HTML, run: gr.State, compare: ViewSpec, heat=None) -> None:
    """A click on a token (``picker``'s select event, or the heat's) sets the heat's and the compare
    view's query token, then redraws the heat and the drawn comparison."""
    queries = [compare.controls["query"], *([heat.position] if heat is not None else [])]
    for source in [picker, *(heat.texts if heat is not None else [])]:
        picked = source.select(pick(len(queries)), None, queries, **QUICK)
        if heat is not None:
            heat.redraw_after(run, picked)
        compare.run_after(picked.success(_drawn, compare.outputs["stats"], None, **QUICK), run, **model_queue())
