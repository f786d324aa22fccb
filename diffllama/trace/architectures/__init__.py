"""One adapter per attention architecture (``Architecture`` subclasses); adding one is a new module
here and its entry in ``ARCHITECTURES``."""

from __future__ import annotations

from .base import Architecture, AttentionShape
from .diffllama import DiffLlama
from .llama import Llama
from .persimmon import Persimmon

ARCHITECTURES: dict[str, type[Architecture]] = {a.name: a for a in (DiffLlama, Llama, Persimmon)}


def architecture_of(config) -> Architecture:
    """The adapter of a model's config (``config.model_type``), holding the model's attention shape."""
    try:
        return ARCHITECTURES[config.model_type](config)
    except KeyError:
        raise ValueError(f"architecture {config.model_type!r} is not supported; choose one of "
                         f"{', '.join(ARCHITECTURES)}") from None


__all__ = ["ARCHITECTURES", "Architecture", "AttentionShape", "DiffLlama", "Llama", "Persimmon", "architecture_of"]
