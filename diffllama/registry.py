"""What the app may load, and a bounded cache of loaded models shared read-only by all requests.

A visitor types a bundled name, a local directory or a hub id. ``resolve_source`` decides by the
allow-lists alone (never by telling a visitor whether a path exists outside them) and normalises it
to one cache key. Loads run in their own small pools (one for local directories, one for the hub, so
a hanging hub never delays a local load), with a time limit and a size check, so a slow or huge
checkpoint never holds the model queue other requests wait on.

    DIFFLLAMA_LENS_MODEL_DIRS    os.pathsep-separated directories local checkpoints may come from;
                                 unset: the bundled models on a Space or in a container, else any
    DIFFLLAMA_LENS_HUB_MODELS    comma-separated hub ids (shell patterns such as ``kajuma/*``) that
                                 may be loaded; unset: none where local loading is limited, else any
    DIFFLLAMA_LENS_MAX_MODEL_GB  largest checkpoint loaded, by its config and its files (default 6)
    DIFFLLAMA_LENS_LOAD_SECONDS  how long a request waits for a load (default 4, within an HTTP client's
                                 usual 5 s; the load goes on and the model is then ready)
    DIFFLLAMA_LENS_CACHE_MODELS, DIFFLLAMA_LENS_CACHE_GB   bounds of the cache (default 12 models, 8 GB)
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path

from .interventions.quantize import SUFFIX, split_source
from .loading import HEADS, LensModel, LoadError, load, parse_hub_id

BUNDLED_ENV = "DIFFLLAMA_LENS_BUNDLED"  # where bundled checkpoints live; assets/models by default
MODEL_DIRS_ENV, HUB_MODELS_ENV = "DIFFLLAMA_LENS_MODEL_DIRS", "DIFFLLAMA_LENS_HUB_MODELS"
MAX_MODEL_GB_ENV, LOAD_SECONDS_ENV = "DIFFLLAMA_LENS_MAX_MODEL_GB", "DIFFLLAMA_LENS_LOAD_SECONDS"
CACHE_MODELS_ENV, CACHE_GB_ENV = "DIFFLLAMA_LENS_CACHE_MODELS", "DIFFLLAMA_LENS_CACHE_GB"
MAX_PENDING_LOADS = 4  # per pool: one load at a time, a few more wait, later ones are turned away


def bundled_root() -> Path:
    return Path(os.environ.get(BUNDLED_ENV, Path(__file__).resolve().parents[1] / "assets" / "models"))


def bundled_models(task: str) -> dict[str, str]:
    """``{name: directory}`` of bundled checkpoints with a head for ``task``, DiffLlama first."""
    return dict(_bundled(str(bundled_root()), task))


@functools.lru_cache(maxsize=64)
def _bundled(root: str, task: str) -> tuple[tuple[str, str], ...]:
    """The folder's listing, read once: every model request resolves names against it."""
    found = {}
    for directory in sorted(Path(root).glob("*/config.json")):
        config = json.loads(directory.read_text())
        if any(name.endswith(HEADS[task]) for name in config.get("architectures", [])):
            found[directory.parent.name] = str(directory.parent)
    order = {"diffllama": 0, "llama": 1, "persimmon": 2}
    return tuple(sorted(found.items(), key=lambda item: (order.get(item[0].split("-")[0], 3), item[0])))


def resolve(name_or_source: str, task: str) -> str:
    """A bundled model's name (of any task) stands for its directory; anything else is a path or hub id."""
    every = {name: path for t in HEADS for name, path in bundled_models(t).items()}
    return bundled_models(task).get(name_or_source) or every.get(name_or_source, name_or_source)


def public_server() -> bool:
    """Running as a Hugging Face Space (which sets SPACE_ID) or in a container: a server for strangers."""
    return bool(os.environ.get("SPACE_ID")) or Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def allowed_dirs() -> list[Path] | None:
    """Directories local checkpoints may come from, or None for any."""
    value = os.environ.get(MODEL_DIRS_ENV)
    if value:
        return [Path(os.path.abspath(os.path.expanduser(p))) for p in value.split(os.pathsep) if p]
    return [Path(os.path.abspath(bundled_root()))] if public_server() else None


def allowed_hub_ids() -> list[str] | None:
    """Hub id patterns that may be loaded, or None for any."""
    value = os.environ.get(HUB_MODELS_ENV)
    if value is not None:
        return [p.strip() for p in value.split(",") if p.strip()]
    return [] if allowed_dirs() is not None else None


@dataclass(frozen=True)
class Source:
    """A checkpoint the app may load: a resolved local directory or a hub repo at a revision."""

    location: str  # absolute directory, or hub repo id
    revision: str | None  # hub only; None = the default branch
    hub: bool
    name: str  # how messages call it: bundled name, directory name or hub id, never a server path
    quantization: str | None = None  # a ``diffllama.interventions.quantize`` scheme ("int8", ...), or None

    @property
    def key(self) -> tuple:
        """(location, revision), and the quantization when there is one: a quantized copy is another model."""
        return (self.location, self.revision, *([self.quantization] if self.quantization else []))

    @property
    def spec(self) -> str:
        """What ``diffllama.load`` takes."""
        spec = f"{self.location}@{self.revision}" if self.revision else self.location
        return f"{spec}{SUFFIX}{self.quantization}" if self.quantization else spec


def refused(typed: str) -> LoadError:
    """The one answer for every source outside the allow-lists: it says nothing about the file system."""
    return LoadError(f"{typed!r} is not a model this server loads: choose a bundled model"
                     + ("" if allowed_hub_ids() == [] else " or an allowed hub id"))


def resolve_source(typed: str, task: str) -> Source:
    """What a visitor typed, as a ``Source`` the allow-lists permit (else ``refused``); a ``#scheme``
    suffix (``diffllama-lm#int8``) asks for the model quantized."""
    typed = (typed or "").strip()
    try:
        base, scheme = split_source(typed)
    except ValueError as error:
        raise LoadError(str(error)) from None
    if scheme:
        return replace(resolve_source(base, task), name=typed, quantization=scheme)
    if not typed:
        raise LoadError("no model given: choose a bundled model")
    bundled = resolve(typed, task)
    local = Path(os.path.abspath(os.path.expanduser(bundled)))  # "dir/././." and "dir/../dir" become "dir"
    dirs, hub_ids = allowed_dirs(), allowed_hub_ids()
    if dirs is None and local.is_dir() or dirs is not None and any(local == d or d in local.parents for d in dirs):
        # the real directory is the key, so aliases and symlinks of one checkpoint load it once
        return Source(str(local.resolve()), None, False, typed if bundled != typed else local.name)
    hub = parse_hub_id(typed)
    if hub and (hub_ids is None or any(fnmatch.fnmatchcase(hub[0], p) for p in hub_ids)):
        return Source(hub[0], hub[1], True, typed)
    if dirs is not None or hub:
        raise refused(typed)
    raise LoadError(f"{typed}: no such directory (give a checkpoint directory or a hub id like 'owner/name')")


class ModelCache:
    """Loaded models by (source key, task), least recently used evicted beyond ``max_models`` or
    ``max_bytes`` of parameters. Loads run in their own pools: a request waits for one at most
    ``load_seconds`` (the load goes on and lands in the cache), two requests for the same model share
    one load, and beyond a few pending loads new ones are turned away."""

    def __init__(self, max_models: int | None = None, max_bytes: float | None = None,
                 load_seconds: float | None = None, max_model_bytes: float | None = None):
        self.max_models = max_models or int(os.environ.get(CACHE_MODELS_ENV, 12))  # the 11 bundled fit
        self.max_bytes = max_bytes or float(os.environ.get(CACHE_GB_ENV, 8)) * 1e9
        self.load_seconds = load_seconds or float(os.environ.get(LOAD_SECONDS_ENV, 4))
        self.max_model_bytes = max_model_bytes or float(os.environ.get(MAX_MODEL_GB_ENV, 6)) * 1e9
        self._models: OrderedDict[tuple, LensModel] = OrderedDict()
        self._loading: dict[tuple, Future] = {}
        self._loading_from: dict[tuple, bool] = {}  # key -> whether the load is from the hub
        self._pools = {hub: ThreadPoolExecutor(1, thread_name_prefix="model-load") for hub in (False, True)}
        self._lock = threading.Lock()

    def get(self, typed: str, task: str) -> LensModel:
        source = resolve_source(typed, task)
        key = (*source.key, task)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            future = self._loading.get(key)
            if future is None:
                if sum(hub == source.hub for hub in self._loading_from.values()) >= MAX_PENDING_LOADS:
                    raise LoadError("the server is busy loading other models; try again in a minute")
                future = self._loading[key] = self._pools[source.hub].submit(self._load, source, task, key)
                self._loading_from[key] = source.hub
        try:
            return future.result(timeout=self.load_seconds)
        except FutureTimeout:
            raise LoadError(f"{source.name} is still loading after {self.load_seconds:.0f} s; try again in a minute "
                            "(the load goes on, and then the model is ready)") from None

    def _load(self, source: Source, task: str, key: tuple) -> LensModel:
        try:
            model = load(source.spec, task=task, name=source.name, max_bytes=self.max_model_bytes)
        except BaseException:
            with self._lock:
                del self._loading[key], self._loading_from[key]
            raise
        with self._lock:
            del self._loading[key], self._loading_from[key]
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
