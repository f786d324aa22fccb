"""The handlers the app wraps in ``spaces.GPU``, through a stand-in for the ``spaces`` package.

On ZeroGPU a wrapped function runs in a process that holds the GPU, and what it returns (or yields)
is pickled back to the main process, which has no CUDA: a tensor left on the GPU, or anything that
does not pickle, fails there. The stand-in wraps each handler the same way and refuses such outputs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import pickle
import sys
import types

import torch

from .report import Report


def gpu_leftovers(value, where: str = "output") -> list[str]:
    """Where in ``value`` a tensor sits on a device other than the CPU."""
    if isinstance(value, torch.Tensor):
        return [] if value.device.type == "cpu" else [f"{where}: tensor on {value.device}"]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((field.name, getattr(value, field.name)) for field in dataclasses.fields(value))
    else:
        return []
    return [found for key, item in items for found in gpu_leftovers(item, f"{where}[{key!r}]")]


class StandIn:
    """``spaces``: ``GPU`` wraps plain and generator functions (bare, or called with ZeroGPU's options
    such as ``duration``) and records, per call, what would not come back to the main process."""

    def __init__(self):
        self.problems: dict[str, list[str]] = {}

    def _returned(self, name: str, value):
        found = gpu_leftovers(value)
        try:
            pickle.dumps(value)
        except Exception as error:  # noqa: BLE001 - whatever pickling raises is the finding
            found.append(f"does not pickle: {error}")
        self.problems.setdefault(name, []).extend(found)
        return value

    def GPU(self, fn=None, **options):  # noqa: N802 - the name spaces uses
        if fn is None:
            return functools.partial(self.GPU, **options)
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                for item in fn(*args, **kwargs):
                    yield self._returned(fn.__name__, item)
            return generator

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            return self._returned(fn.__name__, fn(*args, **kwargs))
        return plain


def install() -> StandIn:
    """Put the stand-in where ``components.model_queue`` imports ``spaces`` from; before that import."""
    if "components.model_queue" in sys.modules:
        raise RuntimeError("components were imported before the stand-in spaces module: their handlers are not wrapped")
    stand_in = StandIn()
    module = types.ModuleType("spaces")
    module.GPU = stand_in.GPU
    sys.modules["spaces"] = module
    return stand_in


def handler_calls(paths: dict, prompt: str, span: str) -> dict:
    """Each ``spaces.GPU``-wrapped handler kind, with the checkpoints in slots A (DiffLlama) and B
    (Llama): the stateless API, a generation run, then the attention panel's views of that run."""
    from components import api, generation_tab
    from components.panel import ablation, compare, maps, overview, zoom

    a, b, tab, layer = str(paths["diffllama"]), str(paths["llama"]), generation_tab.TASK, 1
    return {
        "api.attention_map": lambda: api.attention_map(prompt, "", a, tab, layer, 0, "diff", 64),
        "api.attention_region": lambda: api.attention_region(prompt, "", a, tab, layer, 0, "diff", 0, 8, 0, 8),
        "api.attention_to_span": lambda: api.attention_to_span(prompt, "", b, tab, span),
        "generation_tab.generate (streamed)": lambda: list(generation_tab.generate(prompt, 8, True, 0.8, 0.95, 0, a, b)),
        "panel.maps.show_map": lambda: maps.show_map(tab, "A and B", layer, 0, "diff", 64),
        "panel.zoom.zoom": lambda: zoom.zoom(tab, "A and B", layer, 0, "diff", 0, 8, 0, 8),
        "panel.overview.show_overview": lambda: overview.show_overview(tab, "A and B", "diff", "entropy", overview.ORDERS[0]),
        "panel.compare.compare": lambda: compare.compare(tab, span),
        "panel.compare.outliers": lambda: compare.outliers(tab),
        "panel.ablation.ablate": lambda: ablation.ablate(tab, "A", 0.0),
    }


def check(report: Report, paths: dict) -> None:
    """Every handler through the stand-in, the models loaded by the app's own cache (with the app's
    device and dtype defaults)."""
    import os

    stand_in = install()
    os.environ["DIFFLLAMA_LENS_MODEL_DIRS"] = os.pathsep.join(str(p.parent) for p in paths.values())
    os.environ["DIFFLLAMA_LENS_LOAD_SECONDS"] = "600"  # a first load of 2.5 GB may take longer than a visitor waits
    from components.model_slots import CACHE

    for path in paths.values():  # loaded first, as picking a model in a slot does, outside any request's time limit
        CACHE.get(str(path), "generation")
    prompt = "The magic number of Lyon is 4821. Anna walked to the old market in Paris. The magic number of Lyon is"
    for name, call in handler_calls(paths, prompt, "4821").items():
        wrapped = name.split(".")[-1].split(" ")[0]
        try:
            call()
            problems = stand_in.problems.get(wrapped, ["never went through spaces.GPU"])
        except Exception as error:  # noqa: BLE001 - a handler that fails is this check's finding
            problems = [f"raised {type(error).__name__}: {error}"]
        report.add("zerogpu", name, not problems, returns="CPU data, pickles" if not problems else "; ".join(problems[:3]))
