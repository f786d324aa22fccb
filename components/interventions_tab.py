"""Interventions tab: change one forward pass and read what the answer does — λ per layer, head
ablation (and the map of each head's effect), activation patching clean → corrupted, the logit lens,
and a model against its quantized copy; A and B side by side. Each view is an API endpoint; the
tools (JSON, stateless: ``interventions.tools``) are also the app's MCP tools (``components.api``).
One section per intervention, each in its module under ``components/interventions/``."""

from __future__ import annotations

import gradio as gr

from diffllama import interventions
from diffllama.analysis import measures
from diffllama.interventions.patching import retrieval_pair
from diffllama.registry import bundled_models
from diffllama.study import retrieval_examples
from diffllama.study.measure import prompt

from .interventions import heads, lambdas, logit_lens, patching, quantization
from .interventions.calls import SLOTS, TASK
from .model_slots import default_sources

MEASURES = ("answer probability and rank", "answer logit change", "recovered share", "logit lens", "output KL",
            "top-1 agreement", "map change")


def _default_example() -> tuple[str, str, str, str]:
    """A held-out retrieval prompt (seed 1: not the training seed), its corrupted twin and both answers."""
    directories = list(bundled_models(TASK).values())
    example = retrieval_examples(1, fillers=(8,), seed=1)[0]
    pair = directories and retrieval_pair(example.context, example.question, example.lead_in, directories[0])
    return pair or (prompt(example), prompt(example), " " + example.answer, "")


def build():
    with gr.Tab("Interventions"):
        gr.Markdown("Change one forward pass and read what the answer does: λ per layer, head ablation, activation "
                    "patching, the logit lens, quantization. Nothing in a model changes: each intervention applies "
                    "to that request's pass only. Add `#int8` or `#int8-dynamic` to a source for its quantized copy.")
        default_a, default_b = default_sources(TASK)
        clean_text, corrupted_text, answer_text, foil_text = _default_example()
        bundled = list(bundled_models(TASK))
        choices = bundled + [f"{name}#{scheme}" for name in bundled for scheme in interventions.SCHEMES]
        with gr.Row():
            sources = [gr.Dropdown(choices, value=default, allow_custom_value=True,
                                   label=f"Model {slot} (bundled, a directory or hub id; #int8 for its quantized copy)")
                       for slot, default in zip(SLOTS, (default_a, default_b))]
        text = gr.Textbox(clean_text, lines=4, label="input (the clean input for patching)")
        answer = gr.Textbox(answer_text, label="answer: the text that should come next (empty: the model's own prediction)")
        lambdas.section(text, answer, sources)
        heads.section(text, answer, sources)
        patching.section(text, answer, sources, corrupted_text, foil_text)
        logit_lens.section(text, answer, sources)
        quantization.section(text, answer, sources)
        gr.Markdown(measures.markdown(*MEASURES))
