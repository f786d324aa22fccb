"""Generation tab: A and B continue the same prompt side by side, streaming; then any token's
attention row over the tokens before it, as heat on the text."""

from __future__ import annotations

import gradio as gr

from diffllama import limits

from . import panel, run_store, token_heat
from .errors import user_errors
from .exports import plain
from .model_queue import gpu
from .model_slots import CACHE, model_slots, slot_info
from .safe_text import markdown_code
from .panel.tab import Tab, wire

TASK = "generation"
EXAMPLES = [  # held-out retrieval prompts (seed 1, 4 needles + a look-alike): both models answer the first
    # (1601); only DiffLlama the second (1222)
    ['The magic number of Łódź is 1601. Noah bought 12 tickets at the garden. Later Zoe took a strange letter home. The lucky number of Łódź is 8911. Children played near the fountain. The next day they went to the market together. The bells rang twice at noon. A light wind came from the sea. In April Hugo visited Bergen. The bells rang twice at noon. A light wind came from the sea. The magic number of Krakow is 1816. Pablo was hungry and smiled. Elena bought 8 bottles at the market. Last winter Ines went to the bakery. Zoë lived in Riga. Wendy lives in Porto and works at Atlas Books. Many people walked along the streets. The magic number of Malmö is 1910. The magic number of Lisbon is 9085. There Jonas found a blue bicycle. Björn lived in Oslo. Many people walked along the streets. Many people walked along the streets. Clouds moved over the hills. There Olga found a red kite. Björn was proud and smiled. Chloé lived in Krakow. Near the museum there was a black cat. Ravi had a white goose that liked fish. The river was calm and wide. The next day they went to the beach together. It was a quiet afternoon. What is the magic number of Łódź? The magic number of Łódź is', 6, True],
    ['Some birds sang in the trees. Farid was worried and smiled. A light wind came from the sea. The magic number of Zurich is 4622. David was hungry and smiled. The next day they went to the market together. Someone was baking bread nearby. The shops opened early in the morning. Clouds moved over the hills. Nobody was in a hurry. Some birds sang in the trees. The shops opened early in the morning. In the evening Łukasz felt curious. Last winter Elena went to the library. A dog barked somewhere in the distance. The magic number of 東京 is 3811. The magic number of Riga is 1222. There Łukasz found a strange letter. One morning Rosa went to the river. There Liam found a strange letter. Later 李娜 took a broken clock home. The old clock on the wall was slow. A train left the station on time. The magic number of Oslo is 6389. In January Ravi visited Athens. The lights of the town were bright. The weather was mild that day. On Sunday David felt hungry. The market was full of fruit. The secret number of Riga is 7490. It was a foggy day in Bristol. A train left the station on time. The market was full of fruit. What is the magic number of Riga? The magic number of Riga is', 6, True],
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
                           segments={s: [(r["prompt_length"], "generated")] for s, r in records.items()},
                           inputs=dict(prompt=prompt, max_new_tokens=int(max_new_tokens), greedy=bool(greedy),
                                       temperature=temperature, top_p=top_p, seed=int(seed))))
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
            tokens = model.check_input("prompt", prompt, new_tokens=1)  # the run's own rule: refused past it
            if tokens + int(max_new_tokens) > trained:
                notes.append(f"⚠ **{slot}** was trained on {trained} positions: after this {tokens}-token prompt it "
                             f"will generate at most {trained - tokens} new tokens, not {int(max_new_tokens)}.")
    except ValueError as error:  # an overlong prompt or a slot that did not load: the run itself will say so
        notes.append(f"⚠ {markdown_code(str(error))}")
    return "  \n".join(notes)


def build() -> Tab:
    with gr.Tab("Generation", id=TASK):
        prompt = gr.Textbox(label="prompt", lines=3, value=EXAMPLES[0][0], render=False)
        max_new = gr.Slider(1, 256, value=EXAMPLES[0][1], step=1, label="max new tokens", render=False)
        greedy = gr.Checkbox(value=True, label="greedy", render=False)
        gr.Examples(EXAMPLES, [prompt, max_new, greedy], label="Examples (retrieval: the bundled A and B both answer the first; only A the second)")
        slots = model_slots(TASK)
        (source_a, info_a, _), (source_b, info_b, _) = slots
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
        with gr.Accordion("Attention of one token over the tokens before it", open=True):
            heat = token_heat.build("each model's last token")
        views = panel.build(gr.State(TASK), "generation", heat)  # the state: the key of this tab's last run
        _, tab = wire(views, button, generate, [prompt, max_new, greedy, temperature, top_p, seed, source_a, source_b],
                      [out_a, out_b, raw], "generate", slots, slot_info(TASK), heat)
        notice_inputs = [prompt, max_new, source_a, source_b]
        for trigger in (prompt.change, max_new.change, info_a.change, info_b.change):
            trigger(length_notice, notice_inputs, notice, trigger_mode="always_last", api_visibility="private")
    return tab
