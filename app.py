"""DiffLlama Lens: assembles the four task tabs and the study tab, and launches (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT;
DIFFLLAMA_LENS_MCP=1 adds the MCP server)."""

import logging
import signal
import threading
from pathlib import Path

import gradio as gr

from components import api, classification_tab, generation_tab, interventions_tab, panel, qa_tab, server, study_tab, tagging_tab
from components.model_queue import MODEL_CONCURRENCY
from components.run_store import forget_session
from diffllama.analysis import compile_loops

ASSETS = Path(__file__).parent / "assets"
INTRO = """# DiffLlama Lens
Look inside **DiffLlama** (Differential Transformer attention: each head's map is `A1 − λ·A2`) and
compare it with standard attention. Model **A** defaults to the bundled DiffLlama, **B** to the bundled
Llama trained on the same data; either slot takes any bundled model, a local checkpoint directory or a hub id."""
STYLE = dict(css=(ASSETS / "style.css").read_text(), theme=gr.themes.Soft())


def build() -> gr.Blocks:
    # exports gradio copied into its cache are deleted an hour after they were made (checked every
    # 10 minutes), and all of them when the server stops
    with gr.Blocks(title="DiffLlama Lens", delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            built = [tab.build() for tab in (generation_tab, classification_tab, qa_tab, tagging_tab)]
            study_tab.build()
            interventions_tab.build()
        # a page opened with a link to a view fills its tab first, so the slots describe the linked models
        opened = panel.open_links(demo, tabs, [tab.panel for tab in built])
        for tab in built:
            opened.then(tab.fill, list(tab.sources), list(tab.infos), api_visibility="private")
        api.build()  # stateless endpoints: map numbers for any text, no session needed
        demo.unload(forget_session)
    if server.mcp_enabled():  # the stateless endpoints are the MCP tools; the session-bound ones stay API-only
        server.tools_only(demo, api.TOOLS)
    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=server.QUEUE_SIZE)
    return demo


def launch_settings() -> dict:
    """What ``demo.launch`` takes besides where to listen: the server's settings and the page's style."""
    return dict(server.launch_settings(), **STYLE)


if __name__ == "__main__":
    # user errors as one line each; unexpected ones with their traceback and request id
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # docker stop and Space restarts send SIGTERM: close like Ctrl-C, so gradio deletes its cache (delete_cache)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = build()
    threading.Thread(target=compile_loops, daemon=True).start()  # numba's loops (seconds), before a visitor asks
    try:
        demo.launch(**launch_settings())  # blocks until Ctrl-C or SIGTERM
    finally:
        server.remove_files(demo)
