"""DiffLlama Lens backend: load checkpoints, trace attention lazily, run tasks, analyse."""

from .loading import LensModel, LoadError, load
from .trace import Trace

__all__ = ["LensModel", "LoadError", "Trace", "load"]
