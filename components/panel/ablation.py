"""λ ablation of a DiffLlama: the model rerun with λ replaced in every layer, and what changes (its
table a page at a time, like tagging's: a 2K-token input can change thousands of predictions)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from diffllama import analysis

from .. import figures, paging
from ..errors import user_errors
from ..model_queue import gpu
from ..model_slots import CACHE
from ..safe_text import markdown_code
from ..run_store import current
from .spec import Action, ViewSpec

TABLE = "top prediction before → after ablation"


def ablation_summary(result, task: str, context: str) -> str:
    """What the ablation changed, in words: the label (classification), the answer (QA), or how many
    next-token / tag predictions change."""
    if task == "classification":
        before, after = result.original[0], result.ablated[0]
        return (f"Label {markdown_code(before)} {result.original_prob[0]:.3f} → {markdown_code(after)} "
                f"{result.ablated_prob[0]:.3f}; P({before}) {result.original_prob[0]:.3f} → {result.original_prob_after[0]:.3f} "
                f"(KL {result.kl[0]:.2e}).")
    if task == "qa":
        said = lambda a: f"{markdown_code(context[a[0]:a[1]])} (score {a[2]:.3f})" if a else "no span"  # noqa: E731
        return f"Answer {said(result.answers[0])} → {said(result.answers[1])}."
    changed = sum(result.changed)
    worst = int(np.argmax(result.kl))
    return (f"{changed} of {len(result.changed)} top predictions change; the largest KL, {result.kl[worst]:.2e} nats, "
            f"is at position {worst} {markdown_code(result.tokens[worst])}.")


@user_errors
@gpu
def ablate(tab: str, ablated: str, lambda_value: float, request: gr.Request = None) -> dict:
    """Rerun model ``ablated`` (a DiffLlama) with λ replaced in every layer; what changes, before → after."""
    run = current(request, tab)
    if ablated not in run.traces:
        raise ValueError(f"there is no model {ablated!r}; choose A or B")
    model = CACHE.get(run.models[ablated], run.task)
    result = analysis.lambda_ablation(model, run.traces[ablated], float(lambda_value))
    title = "subtraction switched off (λ = 0)" if float(lambda_value) == 0 else f"λ set to {float(lambda_value):.2f} in every layer"
    ranked = [i for i in np.argsort(result.kl)[::-1] if result.changed[i]] or list(np.argsort(result.kl)[::-1][:10])
    table = [[int(i), result.tokens[i], f"{result.original[i]} ({result.original_prob[i]:.3f})",
              f"{result.ablated[i]} ({result.ablated_prob[i]:.3f})", round(result.original_prob_after[i], 4),
              float(f"{result.kl[i]:.3g}")] for i in ranked]
    summary = (ablation_summary(result, run.task, run.texts[ablated]) + " The model itself is unchanged: the override "
               "applies to this forward pass only. Table: the positions whose top prediction changes (else the 10 "
               "largest KL).")
    return {"plot": figures.ablation_kl(result, f"Model {ablated}, {title}"), "table": paging.page_of(table, 1, TABLE, "positions"),
            "rows": table, "page": 1, "summary": summary}


def turn_page(tab: str, rows: list, page: int | None, request: gr.Request = None) -> dict:
    """Another page of the last ablation's table (its rows kept in the visitor's session)."""
    return {"table": paging.page_of(rows or [], page, TABLE, "positions")}


def build() -> ViewSpec:
    with gr.Accordion("λ ablation (a DiffLlama): what changes when the subtraction is switched off", open=False) as box:
        with gr.Row():
            ablated = gr.Radio(["A", "B"], value="A", label="model (must be a DiffLlama)")
            lambda_value = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                                     label="λ in every layer (0 = subtraction off: only A1 drives the output)")
        button = gr.Button("Run ablation")
        summary, plot = gr.Markdown(), gr.Plot()
        page = gr.Number(1, precision=0, minimum=1, label=f"page of the table ({paging.PAGE_ROWS} positions a page)")
        table = gr.Dataframe(headers=["position", "token", "before (P)", "after (P)", "P(before) after", "KL"],
                             label=TABLE, wrap=True)
        rows = gr.State([])  # the last ablation's rows, for its other pages
    return ViewSpec("ablation", ablate, dict(ablated=ablated, lambda_value=lambda_value),
                    dict(plot=plot, table=table, summary=summary, rows=rows, page=page), button, "ablation", box, linked=False,
                    actions=[Action(page, turn_page, [rows, page], {"table": table}, "ablation_page", event="submit")])
