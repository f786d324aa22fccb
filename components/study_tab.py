"""Study tab: a small study of the chosen language models (the paper's Table 3 and Table 5 over
generated retrieval inputs, with confidence intervals and retrieval accuracy), with progress. Large
studies, or several processes, run from the command line: ``python -m diffllama.study``."""

from __future__ import annotations

import itertools

import gradio as gr
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diffllama.analysis import READINGS
from diffllama.provenance import provenance
from diffllama.registry import bundled_models
from diffllama.study import DEPTHS, report, retrieval_examples, run_study

from . import figures
from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, export_json, gpu, user_errors

TASK = "generation"
MAX_EXAMPLES = 60  # a request's time stays in minutes on CPU; larger studies belong to the command line
READING = READINGS[0]  # the figure's reading: absolute, which cannot leave [0, 1]; the tables show all three
COLOURS = plotly.colors.qualitative.Plotly  # one colour per model in both panels


def by_depth(result: dict) -> go.Figure:
    """Attention to answer and noise by answer depth, a line per model, 95 % CIs as error bars."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("attention to answer ↑", "attention noise ↓"))
    for (name, model), colour in zip(result["models"].items(), itertools.cycle(COLOURS)):
        for col, which in enumerate(("answer", "noise"), start=1):
            cells = model["allocation"][READING][which]["by_depth"]
            depths = list(cells)
            means = [cells[d]["mean"] for d in depths]
            figure.add_trace(go.Scatter(
                x=[float(d) for d in depths], y=means, mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                line_color=colour, error_y=dict(type="data", symmetric=False, color=colour, array=[cells[d]["high"] - m for d, m in zip(depths, means)],
                             arrayminus=[m - cells[d]["low"] for d, m in zip(depths, means)])), row=1, col=col)
    figure.update_xaxes(title_text="answer depth (0 = start of the context)", tickvals=list(DEPTHS))
    figure.update_layout(title=f"{READING} reading, mean over layers and heads, 95 % CI", height=360,
                         margin=dict(l=10, r=10, t=70, b=10))
    return figure


def _lengths(fillers: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(part) for part in fillers.replace(",", " ").split())
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 0:
        raise ValueError(f"filler sentences: give one or more whole numbers ≥ 0, e.g. '4, 8' (got {fillers!r})")
    return lengths


@user_errors
@gpu
def study(models: list[str], examples: int, needles: int, fillers: str, seed: int, progress=gr.Progress()):
    if not models:
        raise ValueError("pick at least one language model")
    if not 1 <= int(examples) <= MAX_EXAMPLES:
        raise ValueError(f"run 1 to {MAX_EXAMPLES} inputs here; larger studies: python -m diffllama.study (see README)")
    chosen = {name: CACHE.get(name, TASK) for name in models}
    inputs = retrieval_examples(int(examples), int(needles), _lengths(fillers), DEPTHS, int(seed))
    result = run_study(chosen, inputs, progress=lambda fraction, text: progress(fraction, desc=text))
    record = provenance({f"model {i + 1}": name for i, name in enumerate(models)},
                        dict(examples=int(examples), needles=int(needles), fillers=fillers, seed=int(seed)))
    return report.markdown(result), figures.provenance_note(by_depth(result), record), export_json("study", result, record)


def build():
    with gr.Tab("Study"):
        gr.Markdown("Attention to the answer vs noise (all three readings, by answer depth, context length and layer), "
                    "attention sinks and activation outliers over generated multi-needle retrieval inputs, next to "
                    "whether each model found the answer; each mean with its 95 % bootstrap CI. For ≥ 200 inputs, "
                    "your own JSONL file or several processes, use `python -m diffllama.study` (README).")
        names = list(bundled_models(TASK))
        models = gr.Dropdown(names, value=names, multiselect=True, allow_custom_value=True,
                             label="language models (bundled, or a local directory / hub id)")
        with gr.Row():
            examples = gr.Slider(1, MAX_EXAMPLES, value=20, step=1, label="inputs")
            needles = gr.Slider(2, 6, value=4, step=1, label="needles per context (one asked, the others other cities')")
            fillers = gr.Textbox("28, 60", label="haystack sentences per context, ≈ 9 tokens each (one or more values: "
                                 "context lengths; 28 ≈ 260 tokens, 60 ≈ 500, 245 ≈ 2K)")
            seed = gr.Number(0, precision=0, label="seed")
        button = gr.Button("Run study", variant="primary")
        figure = gr.Plot()
        tables = gr.Markdown()
        numbers = gr.File(label="the study's numbers (JSON)")
        button.click(study, [models, examples, needles, fillers, seed], [tables, figure, numbers], api_name="study",
                     concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
