"""Generation tab: A and B continue the same prompt side by side, streaming; then any token's
attention row over the tokens before it, as heat on the text."""

from __future__ import annotations

import gradio as gr

from diffllama import limits

from . import attention_panel, run_store, token_heat
from .common import CACHE, gpu, markdown_code, model_slots, plain, slot_info, user_errors

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
                yield texts["A"], texts["B"], gr.update()
            traces[slot] = stream.result.trace
            records[slot] = plain(stream.result)
        keep(run_store.Run(TASK, models, traces, texts={s: prompt + r["text"] for s, r in records.items()},
                           segments={s: [(r["prompt_length"], "generated")] for s, r in records.items()}))
    yield texts["A"], texts["B"], records


def length_notice(prompt: str, max_new_tokens: int, source_a: str, source_b: str) -> str:
    """Said before running: which model the request would take past its trained length, and what
    happens then (a prompt past it is refused; a continuation stops where the positions end)."""
    notes = []
    try:
        limits.check_length(prompt, "prompt")
        for slot, source in (("A", source_a), ("B", source_b)):
            model = CACHE.get(source, TASK)
            trained = model.config.max_position_embeddings
            tokens = len(model.tokenizer(prompt)["input_ids"])
            if tokens >= trained:
                notes.append(f"⚠ **{slot}** was trained on {trained} positions and the prompt is {tokens} tokens: "
                             "generation will refuse it — shorten the prompt.")
            elif tokens + int(max_new_tokens) > trained:
                notes.append(f"⚠ **{slot}** was trained on {trained} positions: after this {tokens}-token prompt it "
                             f"will generate at most {trained - tokens} new tokens, not {int(max_new_tokens)}.")
    except ValueError as error:  # an overlong prompt or a slot that did not load: the run itself will say so
        notes.append(f"⚠ {markdown_code(str(error))}")
    return "  \n".join(notes)


def build():
    with gr.Tab("Generation"):
        prompt = gr.Textbox(label="prompt", lines=3, value=EXAMPLES[0][0], render=False)
        max_new = gr.Slider(1, 256, value=EXAMPLES[0][1], step=1, label="max new tokens", render=False)
        greedy = gr.Checkbox(value=True, label="greedy", render=False)
        gr.Examples(EXAMPLES, [prompt, max_new, greedy], label="Examples")
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        prompt.render()
        with gr.Row():
            max_new.render()
            greedy.render()
            temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
            seed = gr.Number(value=0, precision=0, label="seed")
        notice = gr.Markdown(elem_classes=["length-notice"])
        button = gr.Button("Generate with A and B", variant="primary")
        with gr.Row():
            out_a = gr.Textbox(label="A continues", lines=4)
            out_b = gr.Textbox(label="B continues", lines=4)
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        with gr.Accordion("Attention of one token over the tokens before it", open=True):
            heat = token_heat.build("each model's last token")
        panel = attention_panel.build(run, "generation")
        event = panel.run_on(button, generate, [prompt, max_new, greedy, temperature, top_p, seed, source_a, source_b],
                             [out_a, out_b, raw], run, "generate")
        heat.wire(run, event)
        panel.fit_to_models(TASK, [source_a, source_b], [info_a, info_b], [heat.layer])
        notice_inputs = [prompt, max_new, source_a, source_b]
        for trigger in (prompt.change, max_new.change, info_a.change, info_b.change):
            trigger(length_notice, notice_inputs, notice, trigger_mode="always_last", api_visibility="private")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
