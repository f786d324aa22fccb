"""Bundled checkpoints and a bounded cache of loaded models, shared read-only by all requests."""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

from .loading import HEADS, LensModel, load

BUNDLED_ENV = "DIFFLLAMA_LENS_BUNDLED"  # where bundled checkpoints live; assets/models by default
CACHE_MODELS_ENV, CACHE_GB_ENV = "DIFFLLAMA_LENS_CACHE_MODELS", "DIFFLLAMA_LENS_CACHE_GB"


def bundled_models(task: str) -> dict[str, str]:
    """``{name: directory}`` of bundled checkpoints with a head for ``task``, DiffLlama first."""
    found = {}
    bundled = Path(os.environ.get(BUNDLED_ENV, Path(__file__).resolve().parents[1] / "assets" / "models"))
    for directory in sorted(bundled.glob("*/config.json")):
        config = json.loads(directory.read_text())
        if any(name.endswith(HEADS[task]) for name in config.get("architectures", [])):
            found[directory.parent.name] = str(directory.parent)
    order = {"diffllama": 0, "llama": 1, "persimmon": 2}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0].split("-")[0], 3), item[0])))


def resolve(name_or_source: str, task: str) -> str:
    """A bundled model's name (of any task) stands for its directory; anything else is a path or hub id."""
    every = {name: path for t in HEADS for name, path in bundled_models(t).items()}
    return bundled_models(task).get(name_or_source) or every.get(name_or_source, name_or_source)


class ModelCache:
    """Loaded models by (source, task), least recently used evicted beyond ``max_models`` or
    ``max_bytes`` of parameters. Loading happens outside the lock, so a slow load does not block
    requests for models already loaded; two requests for the same new model may both load it once."""

    def __init__(self, max_models: int | None = None, max_bytes: float | None = None):
        self.max_models = max_models or int(os.environ.get(CACHE_MODELS_ENV, 12))  # the 11 bundled fit
        self.max_bytes = max_bytes or float(os.environ.get(CACHE_GB_ENV, 8)) * 1e9
        self._models: OrderedDict[tuple[str, str], LensModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, task: str) -> LensModel:
        key = (resolve(source, task), task)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = load(key[0], task=task)
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > 1 and (len(self._models) > self.max_models or self.nbytes > self.max_bytes):
                self._models.popitem(last=False)
        return model

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self._models.values() for p in m.model.parameters())

    def __len__(self) -> int:
        return len(self._models)
