"""Study tab: a small study of the chosen language models (the paper's Table 3 and Table 5 over
generated retrieval inputs, with confidence intervals, paired differences and retrieval accuracy),
with progress. Every parameter is bounded (``BOUNDS``); studies run in a lane of their own
(``STUDY_QUEUE``, one at a time), never in the model queue's slots. Large studies, or several
processes, run from the command line: ``python -m diffllama.study``."""

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
from diffllama.study.examples import BOUNDS as STUDY_BOUNDS
from diffllama.study.examples import check_bound

from . import figures
from .errors import user_errors
from .exports import export_json
from .model_queue import gpu
from .model_slots import CACHE

TASK = "generation"
# what the tab may ask for; larger studies belong to the command line (README)
BOUNDS = {**STUDY_BOUNDS, "inputs": (1, 60), "needles": (1, 8), "fillers": (0, 245), "lengths": (1, 4), "seed": (0, 2**31 - 1)}
STUDY_QUEUE = "study"  # studies' own lane: one at a time, so they never hold the model queue's slots
READING = READINGS[0]  # the figure's reading: the default (net), which cannot blow up; the tables show every one
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


def _lengths(fillers) -> tuple[int, ...]:
    """The filler counts typed as "28, 60": one per context length, each checked against ``BOUNDS``."""
    parts = str(fillers if fillers is not None else "").replace(",", " ").split()
    low, high = BOUNDS["fillers"]
    if not parts:
        raise ValueError(f"fillers: give one or more whole numbers from {low} to {high}, e.g. '28, 60' (got {fillers!r})")
    check_bound("lengths", len(parts), BOUNDS)
    return tuple(check_bound("fillers", part.strip(), BOUNDS) for part in parts)


@user_errors
@gpu
def study(models: list[str], examples: int, needles: int, fillers: str, seed: int, progress=gr.Progress()):
    if not models:
        raise ValueError("pick at least one language model")
    if len(models) > 3:
        raise ValueError(f"models: pick 1 to 3 language models (got {len(models)}); larger studies: python -m diffllama.study")
    examples, needles, seed = (check_bound(name, value, BOUNDS) for name, value in
                               (("inputs", examples), ("needles", needles), ("seed", seed)))
    lengths = _lengths(fillers)
    chosen = {name: CACHE.get(name, TASK) for name in models}
    inputs = retrieval_examples(examples, needles, lengths, DEPTHS, seed, bounds=BOUNDS)  # under the request's time limit
    result = run_study(chosen, inputs, progress=lambda fraction, text: progress(fraction, desc=text))
    record = provenance({f"model {i + 1}": name for i, name in enumerate(models)},
                        dict(examples=examples, needles=needles, fillers=fillers, seed=seed))
    return report.markdown(result), figures.provenance_note(by_depth(result), record), export_json("study", result, record)


def build():
    with gr.Tab("Study"):
        gr.Markdown("Attention to the answer vs noise from the query token (every reading, by answer depth, context length "
                    "and layer, λ beside each DiffLlama layer), attention sinks and activation outliers over generated "
                    "multi-needle retrieval inputs, next to whether each model found the answer; means with 95 % "
                    "bootstrap CIs, accuracies with Wilson intervals, and paired differences between the models on the "
                    "same inputs. Studies run one at a time. For ≥ 200 inputs, your own JSONL file or several processes, "
                    "use `python -m diffllama.study` (README).")
        names = list(bundled_models(TASK))
        models = gr.Dropdown(names, value=names, multiselect=True, allow_custom_value=True,
                             label="language models (bundled, or a local directory / hub id)")
        with gr.Row():
            examples = gr.Slider(*BOUNDS["inputs"], value=20, step=1, label="inputs")
            needles = gr.Slider(*BOUNDS["needles"], value=4, step=1, label="needles per context (one asked, the others other cities')")
            fillers = gr.Textbox("28, 60", label=f"haystack sentences per context, ≈ 9 tokens each ({BOUNDS['lengths'][1]} "
                                 f"values at most, each {BOUNDS['fillers'][0]}–{BOUNDS['fillers'][1]}: context lengths; "
                                 "28 ≈ 260 tokens, 60 ≈ 500, 245 ≈ 2K)")
            seed = gr.Number(0, precision=0, label="seed")
        button = gr.Button("Run study", variant="primary")
        figure = gr.Plot()
        tables = gr.Markdown()
        numbers = gr.File(label="the study's numbers (JSON)", elem_classes=["export-file"])
        button.click(study, [models, examples, needles, fillers, seed], [tables, figure, numbers], api_name="study",
                     concurrency_id=STUDY_QUEUE, concurrency_limit=1)
