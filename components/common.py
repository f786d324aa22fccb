"""Pieces every tab shares: model slots A/B, error translation, token heat, exports, GPU wrapping."""

from __future__ import annotations

import csv
import functools
import inspect
import json
import logging
import os
import tempfile
from dataclasses import asdict, is_dataclass

import gradio as gr
import numpy as np

from diffllama import LoadError
from diffllama.registry import ModelCache, bundled_models

log = logging.getLogger("diffllama_lens")
CACHE = ModelCache()  # loaded models are read-only; every per-request value lives in gr.State or locals
MODEL_QUEUE = "model"  # one concurrency group for every event that runs a model
MODEL_CONCURRENCY = int(os.environ.get("DIFFLLAMA_LENS_CONCURRENCY", 2))  # 2 CPU cores; raise on a GPU

try:  # on a ZeroGPU Space, functions that run models get a GPU for their duration; elsewhere a no-op
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn


def user_errors(fn):
    """Show what went wrong as a message in the UI / API error, never a stack trace."""

    def translate(error: Exception):
        if isinstance(error, (ValueError, LoadError, IndexError, KeyError, TypeError)):
            return gr.Error(str(error))
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(error).__name__}); the app keeps running. Try another input.")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 - the edge where errors become messages
                raise translate(error) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise translate(error) from None
    return plain


# --- model slots -----------------------------------------------------------------------------
def default_sources(task: str) -> tuple[str | None, str | None]:
    """Slot A: the bundled DiffLlama for the task; slot B: the bundled Llama."""
    names = list(bundled_models(task))
    pick = lambda prefix: next((n for n in names if n.startswith(prefix)), names[0] if names else None)  # noqa: E731
    return pick("diffllama"), pick("llama")


def describe(model) -> str:
    info = model.info
    lam = "λ per layer: yes" if info.has_lambda else "λ: none (standard attention)"
    return (f"**{info.arch}** · {info.task} · {info.num_parameters / 1e6:.2f} M parameters · "
            f"{info.num_layers} layers × {info.num_heads} {'differential ' if info.has_lambda else ''}heads · "
            f"{lam} · {info.device} / {info.dtype}")


def model_slots(task: str):
    """Two model pickers (bundled names or any path / hub id) with an info line under each.
    Returns (dropdown A, dropdown B) whose values are the sources each run uses."""
    choices = list(bundled_models(task))
    default_a, default_b = default_sources(task)
    dropdowns = []
    with gr.Row():
        for slot, default in (("A", default_a), ("B", default_b)):
            with gr.Column():
                dropdown = gr.Dropdown(choices=choices, value=default, allow_custom_value=True,
                                       label=f"Model {slot} (bundled, or a local directory / hub id)")
                info = gr.Markdown(elem_classes=["model-info"])
                previous = gr.State(default)
                dropdown.change(load_slot(task), [dropdown, previous], [dropdown, previous, info],
                                concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY, api_visibility="private")
                dropdowns.append((dropdown, info, previous))
    return dropdowns


def load_slot(task: str):
    def load(source: str, previous: str, progress=gr.Progress()):
        if not source:
            return previous, previous, gr.update()
        progress(0.1, desc=f"loading {source}")
        try:
            model = CACHE.get(source, task)
        except Exception as error:  # noqa: BLE001 - keep the previous model, say why
            gr.Warning(f"Could not load {source}: {error}. Keeping {previous}.")
            return previous, previous, gr.update()
        return source, source, describe(model)
    return load


def slot_info(task: str):
    """Loads the default models at page load, so the info lines are filled."""
    def fill(source_a: str, source_b: str):
        return tuple(describe(CACHE.get(s, task)) if s else "no bundled model for this task" for s in (source_a, source_b))
    return fill


# --- display helpers --------------------------------------------------------------------------
def token_heat(text: str, offsets: list[tuple[int, int]], values, sequence_ids=None, sequence: int = 0) -> list:
    """``gr.HighlightedText`` value: the text with each token's value in [-1, 1] (scaled by the
    largest magnitude), gaps between tokens unmarked."""
    values = np.asarray(values, dtype=float)
    scale = float(np.abs(values).max()) or 1.0
    pieces, cursor = [], 0
    for i, (start, end) in enumerate(offsets):
        if end <= start or (sequence_ids is not None and sequence_ids[i] != sequence) or start < cursor:
            continue
        if start > cursor:
            pieces.append((text[cursor:start], None))
        pieces.append((text[start:end], round(float(values[i]) / scale, 4)))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], None))
    return pieces


def plain(record) -> dict:
    """A record as JSON-able data (numpy arrays as lists; traces left out)."""
    def convert(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if k != "trace"}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value
    return convert({k: v for k, v in asdict(record).items() if k != "trace"} if is_dataclass(record) else record)


def export_json(name: str, data) -> str:
    path = os.path.join(tempfile.mkdtemp(prefix="lens-"), f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    return path


def export_csv(name: str, header: list[str], rows: list[list]) -> str:
    path = os.path.join(tempfile.mkdtemp(prefix="lens-"), f"{name}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
