"""Generation tab: A and B continue the same prompt side by side, streaming; then any token's
attention row over the tokens before it, as heat on the text."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis

from . import attention_panel, run_store
from .common import CACHE, gpu, model_slots, plain, slot_info, token_heat, user_errors

TASK = "generation"
EXAMPLES = [["The magic number of Lyon is 4821. A bus passed by slowly. The magic number of Oslo is 7310. "
             "What is the magic number of Lyon?", 8, True],
            ["Anna lived in Paris. One morning Anna went to", 40, False],
            ["Bob met Clara near the old bridge.", 40, False]]


@user_errors
@gpu
def generate(prompt: str, max_new_tokens: int, greedy: bool, temperature: float, top_p: float, seed: int,
             source_a: str, source_b: str, request: gr.Request = None):
    """Streams (text A, text B) while generating, then the records; the run (both traces) goes to the run store."""
    models = {"A": source_a, "B": source_b}
    texts, records, traces = {"A": "", "B": ""}, {}, {}
    with run_store.recording(request, TASK) as keep:
        for slot, source in models.items():
            stream = CACHE.get(source, TASK).generate(prompt, max_new_tokens=int(max_new_tokens), temperature=temperature,
                                                      top_p=top_p, greedy=greedy, seed=int(seed))
            for piece in stream:
                texts[slot] += piece
                yield texts["A"], texts["B"], gr.update(), gr.update()
            traces[slot] = stream.result.trace
            records[slot] = plain(stream.result)
        keep(run_store.Run(TASK, models, traces, texts={s: prompt + r["text"] for s, r in records.items()}))
    last = traces["A"].seq_len - 1
    yield texts["A"], texts["B"], records, gr.update(maximum=last, value=last)


@user_errors
def token_row(tab: str, slot: str, position: int, layer: int, request: gr.Request = None):
    """The chosen token's attention over the tokens up to it (mean over heads), as heat."""
    run = run_store.current(request, tab)
    trace = run.traces[slot]
    position, layer = int(position), int(layer)
    row = analysis.attention_row(trace, layer, None, trace.kinds[0], position)
    heat = token_heat(run.texts[slot], trace.offsets[: position + 1], row[: position + 1])
    token = trace.tokens[position]
    return heat, f"Model {slot}: token {position} {token!r}, layer {layer}, mean over heads ({trace.kinds[0]} maps)"


def build():
    with gr.Tab("Generation"):
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        prompt = gr.Textbox(label="prompt", lines=3, value=EXAMPLES[0][0])
        with gr.Row():
            max_new = gr.Slider(1, 256, value=EXAMPLES[0][1], step=1, label="max new tokens")
            greedy = gr.Checkbox(value=True, label="greedy")
            temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
            seed = gr.Number(value=0, precision=0, label="seed")
        button = gr.Button("Generate with A and B", variant="primary")
        with gr.Row():
            out_a = gr.Textbox(label="A continues", lines=4)
            out_b = gr.Textbox(label="B continues", lines=4)
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        with gr.Accordion("Attention of one token over the tokens before it", open=True):
            with gr.Row():
                slot = gr.Radio(["A", "B"], value="A", label="model")
                position = gr.Slider(0, 8192, value=0, step=1, label="token position (prompt + generation)")
                layer = gr.Slider(0, 127, value=0, step=1, label="layer")
            caption = gr.Markdown()
            heat = gr.HighlightedText(label="attention row as token heat (red: more, blue: negative)")
        panel = attention_panel.build(run, "generation")
        gr.Examples(EXAMPLES, [prompt, max_new, greedy])
        event = panel.run_on(button, generate, [prompt, max_new, greedy, temperature, top_p, seed, source_a, source_b],
                             [out_a, out_b, raw, position], run, "generate")
        event.then(token_row, [run, slot, position, layer], [heat, caption], api_visibility="private")
        row_inputs = [run, slot, position, layer]
        slot.change(token_row, row_inputs, [heat, caption], api_visibility="private")
        position.release(token_row, row_inputs, [heat, caption], api_visibility="private")
        layer.release(token_row, row_inputs, [heat, caption], api_visibility="private")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
