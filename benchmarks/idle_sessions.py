"""Memory held for idle visitors: many sessions each run a long generation on a larger DiffLlama /
Llama pair (8 layers, hidden 512, 2,048 positions, random weights, built locally), then sit idle. The
app's resident memory is sampled before, after the runs, and after the sessions' runs expire.

    python benchmarks/idle_sessions.py --sessions 40 --prompt-tokens 1990
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from load_test import RSS, launch  # noqa: E402


def build_pair(folder: Path, tokenizer) -> dict[str, str]:
    """An 8-layer, hidden-512 DiffLlama and Llama language model with the bundled tokenizer."""
    paths = {}
    for arch, cls in (("diffllama", transformers.DiffLlamaForCausalLM), ("llama", transformers.LlamaForCausalLM)):
        torch.manual_seed(0)
        config = transformers.AutoConfig.for_model(arch, vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1376,
                                                   num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                                                   max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                                                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        path = folder / f"{arch}-big-lm"
        cls(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[arch] = str(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--prompt-tokens", type=int, default=1990)
    parser.add_argument("--session-ttl-min", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=7875)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lens-idle-"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(ROOT / "assets" / "models" / "diffllama-lm")
    models = build_pair(folder / "models", tokenizer)
    ids = tokenizer("Anna walked to the old market in Paris. " * args.prompt_tokens, add_special_tokens=False)["input_ids"]
    prompt = tokenizer.decode(ids[: args.prompt_tokens - 2])  # room for the special tokens
    os.environ["DIFFLLAMA_LENS_MODEL_DIRS"] = str(folder / "models")
    process = launch(args.port, folder, DIFFLLAMA_LENS_SESSION_TTL_MIN=args.session_ttl_min)
    url = f"http://127.0.0.1:{args.port}/"
    rss = RSS(process.pid)
    report = {"sessions": args.sessions, "rss_idle_gb": round(rss.now(), 2)}
    try:
        clients = []
        start = time.perf_counter()
        for _ in range(args.sessions):
            client = Client(url, verbose=False)  # kept open: an idle visitor, not one who left
            client.predict(prompt, 8, True, 0.8, 0.95, 0, models["diffllama"], models["llama"], api_name="/generate")
            clients.append(client)
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["rss_after_runs_gb"] = round(rss.now(), 2)
        report["rss_peak_gb"] = round(rss.peak_since(0), 2)
        time.sleep(args.session_ttl_min * 60 + 20)  # idle past the time-to-live (swept every quarter of it)
        report["rss_after_ttl_gb"] = round(rss.now(), 2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
