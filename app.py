"""DiffLlama Lens: assembles the four tabs and launches (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)."""

from pathlib import Path

import gradio as gr

from components import classification_tab, generation_tab, qa_tab, tagging_tab
from components.common import MODEL_CONCURRENCY
from components.run_store import forget_session

ASSETS = Path(__file__).parent / "assets"
INTRO = """# DiffLlama Lens
Look inside **DiffLlama** (Differential Transformer attention: each head's map is `A1 − λ·A2`) and
compare it with standard attention. Model **A** defaults to the bundled DiffLlama, **B** to the bundled
Llama trained on the same data; either slot takes any bundled model, a local checkpoint directory or a hub id."""


def build() -> gr.Blocks:
    with gr.Blocks(title="DiffLlama Lens") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            for tab in (generation_tab, classification_tab, qa_tab, tagging_tab):
                sources, infos, fill = tab.build()
                demo.load(fill, list(sources), list(infos), api_visibility="private")
        demo.unload(forget_session)
    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY)
    return demo


if __name__ == "__main__":
    build().launch(css=(ASSETS / "style.css").read_text(), theme=gr.themes.Soft())
